/* fuzz_image.c - libFuzzer target for the image decoder front: the bytes of
 * an uploaded file go through img_to_input(), the function the server calls
 * on every raw, multipart and base64 image (magic sniffing, the libpng path
 * for PNG, stb_image for JPEG/BMP/GIF/PNM, alpha, trim, area/bilinear resize,
 * centring, background estimation and inversion), with the pixel limit set
 * to FUZZ_MAX_PIXELS so decompression bombs are refused from the header.
 * The inversion mode is picked from the input length (not from its bytes, so
 * the magic stays at offset 0).  A decoded input is checked (every value in
 * [0,1]) and round-tripped through img_png_encode_gray8, which must succeed
 * and produce a PNG that decodes again. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "fuzz_common.h"
#include "image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const img_invert modes[3] = {IMG_INVERT_AUTO, IMG_INVERT_ON, IMG_INVERT_OFF};
    float out[IMG_N];
    img_info info;
    char err[256];
    (void)img_format_name(img_sniff(data, size));
    int rc = img_to_input(size ? data : NULL, size, FUZZ_MAX_PIXELS, modes[size % 3], out, &info, err, sizeof err);
    (void)img_status_name(rc);
    if (rc != IMG_OK) return 0;
    for (int i = 0; i < IMG_N; i++)
        if (!(out[i] >= 0.0f && out[i] <= 1.0f)) {
            fprintf(stderr, "input[%d] = %g outside [0,1]\n", i, (double)out[i]);
            abort();
        }
    uint8_t gray[IMG_N];
    img_input_to_gray8(out, gray);
    uint8_t *png = NULL;
    size_t png_len = 0;
    if (img_png_encode_gray8(gray, IMG_SIDE, IMG_SIDE, &png, &png_len, err, sizeof err) != IMG_OK) {
        fprintf(stderr, "re-encoding failed: %s\n", err);
        abort();
    }
    float again[IMG_N];
    rc = img_to_input(png, png_len, FUZZ_MAX_PIXELS, IMG_INVERT_OFF, again, &info, err, sizeof err);
    free(png);
    if (rc != IMG_OK) {
        fprintf(stderr, "our own PNG does not decode: %s\n", err);
        abort();
    }
    for (int i = 0; i < IMG_N; i++)
        if (fabsf(again[i] - gray[i] / 255.0f) > 1e-6f) {
            fprintf(stderr, "PNG round trip changed pixel %d\n", i);
            abort();
        }
    return 0;
}
