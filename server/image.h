/* image.h - turn the bytes of an uploaded image into the 28x28 float input
 * the Fashion-MNIST model expects, and encode 8-bit gray images as PNG.
 *
 * Everything here is a pure function over caller-owned buffers: no HTTP, no
 * sockets, no globals, no printing, no exit().  The server's access handler
 * gathers the request body and hands it to img_to_input(); tests and the
 * fuzzer call the same function directly.
 *
 * Left out: Content-Type (the format is identified by its magic bytes),
 * colour management (gAMA/iCCP/sRGB are ignored: samples are used as
 * stored), animation (a GIF gives its first frame), EXIF orientation, and
 * every format other than PNG, JPEG, BMP, GIF and binary PNM (P5/P6).
 *
 * Return convention: every function that can fail returns an img_status
 * (IMG_OK == 0 on success) and, on failure, writes a message a person can
 * act on into the caller's err buffer (err may be NULL or errsz 0; the
 * message is always NUL-terminated and truncated to fit).  Thread-safe:
 * concurrent calls share no mutable state. */
#ifndef IMG_IMAGE_H
#define IMG_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IMG_SIDE 28                    /* model input is IMG_SIDE x IMG_SIDE */
#define IMG_N (IMG_SIDE * IMG_SIDE)    /* 784 */

/* The server's default for max_pixels (--max-pixels): 16 megapixels. */
#define IMG_DEFAULT_MAX_PIXELS ((size_t)16 * 1024 * 1024)

/* Status codes; the server maps them to HTTP statuses as noted. */
typedef enum img_status {
    IMG_OK = 0,
    IMG_EMPTY,          /* no bytes at all                          -> 400 */
    IMG_UNKNOWN_FORMAT, /* magic bytes match no supported format    -> 415 */
    IMG_CORRUPT,        /* truncated, bad CRC, bad header, 0 width  -> 400 */
    IMG_TOO_LARGE,      /* width*height over max_pixels             -> 413 */
    IMG_NOMEM,          /* an allocation failed                     -> 503 */
} img_status;

/* Inversion policy; the HTTP layer maps ?invert=auto|true|false. */
typedef enum img_invert {
    IMG_INVERT_AUTO = 0, /* invert iff not 28x28 and the background is light */
    IMG_INVERT_ON,       /* always invert (also a 28x28 image)               */
    IMG_INVERT_OFF,      /* never invert                                     */
} img_invert;

typedef enum img_format {
    IMG_FMT_UNKNOWN = 0,
    IMG_FMT_PNG,
    IMG_FMT_JPEG,
    IMG_FMT_BMP,
    IMG_FMT_GIF,
    IMG_FMT_PNM,
} img_format;

/* What img_to_input found and did, for the JSON reply.  Coordinates are in
 * pixels, x from the left, y from the top. */
typedef struct img_info {
    const char *format;       /* "png","jpeg","bmp","gif","pnm"; "unknown"
                                 before identification. Static storage. */
    size_t width, height;     /* original size, from the file's header */
    int channels;             /* decoded channels: 1 gray, 2 gray+alpha,
                                 3 RGB, 4 RGBA (stb gives GIF as 4) */
    bool has_alpha;           /* some pixel was not fully opaque, so the
                                 image was composited onto its background */
    bool border_transparent;  /* no opaque border pixel: the background was
                                 chosen, not measured (see img_to_input) */
    float background;         /* background luminance in [0,1], as found in
                                 the image, before any inversion */
    bool trimmed;             /* a uniform border was cut away */
    size_t trim_x, trim_y, trim_w, trim_h; /* the box kept (whole image when
                                              !trimmed) */
    bool resized;             /* the kept box was scaled */
    size_t item_x, item_y, item_w, item_h; /* where the (scaled) box sits on
                                              the 28x28 canvas */
    bool inverted;            /* output is 1 - luminance */
} img_info;

/* Identifies the format from the first bytes of data (never from a
 * Content-Type).  Pure; reads at most the first 30 bytes. */
img_format img_sniff(const uint8_t *data, size_t len);

/* "png", "jpeg", "bmp", "gif", "pnm" or "unknown". Static storage. */
const char *img_format_name(img_format fmt);

/* "ok", "empty", "unknown_format", "corrupt", "too_large", "nomem" or
 * "invalid" for a value outside img_status. Static storage. */
const char *img_status_name(int status);

/* Decodes an image file held in memory and writes the model input.
 *
 *   data, len   the file's bytes (data may be NULL only when len is 0);
 *               only read, never kept.
 *   max_pixels  refuse images with width*height above this (IMG_TOO_LARGE),
 *               checked from the header before any pixel is decoded; 0 means
 *               IMG_DEFAULT_MAX_PIXELS.  Values above INT_MAX/4 are lowered
 *               to INT_MAX/4 (stb's int strides).
 *   mode        inversion policy, see img_invert.
 *   out         [28*28] row-major, values in [0,1]; written only on IMG_OK.
 *   info        filled on success; on failure it holds what was learnt
 *               before the failure (format, width, height) and zeros.
 *   err, errsz  message buffer for failures (may be NULL / 0).
 *
 * Pipeline: decode -> luminance (Rec. 601: 0.299R + 0.587G + 0.114B; a gray
 * pixel stays exact) -> composite alpha onto the background -> then
 *   - 28x28: used as is, out = luminance/255 (Fashion-MNIST convention:
 *     light item on black); inverted only with IMG_INVERT_ON.
 *   - any other size, the way Fashion-MNIST was made from product photos:
 *     trim the border whose luminance is within 5% of the background, scale
 *     the kept box so its longest side is 28 (area filter when shrinking,
 *     bilinear when enlarging), centre it on a 28x28 canvas of background,
 *     and (IMG_INVERT_AUTO) invert when the background is light (> 0.5), so
 *     the item ends up light on black.
 * Background: the median luminance of the border pixels (first/last row and
 * column) that are at least half opaque; the median, not the mean, so an
 * item touching the edge does not drag it.  When no border pixel is opaque
 * (a cut-out on a transparent canvas) the background is chosen: black for a
 * 28x28 image (the data set's convention); otherwise black when the opaque
 * pixels are light on average and white when they are dark, so the item
 * contrasts with it and auto inversion makes it light on black.
 *
 * Memory: allocates about width*height*(channels + 4) bytes while it runs,
 * plus the decoder's own working memory (stb's GIF decoder holds about 9
 * bytes per pixel of the logical screen), and frees all of it before
 * returning, on every path. */
int img_to_input(const uint8_t *data, size_t len, size_t max_pixels,
                 img_invert mode, float out[IMG_N], img_info *info, char *err,
                 size_t errsz);

/* Converts the model input to 8-bit gray: round(clamp(x,0,1) * 255), NaN to
 * 0.  For x == p/255.0f it gives back p exactly. */
void img_input_to_gray8(const float in[IMG_N], uint8_t out[IMG_N]);

/* Encodes w x h 8-bit gray pixels (row-major, no padding) as a PNG file in
 * memory.  On IMG_OK, *out is a malloc'd buffer of *out_len bytes that the
 * caller frees with free(); on failure *out is NULL and *out_len 0.
 * Returns IMG_EMPTY for a NULL px, out or out_len or w, h <= 0,
 * IMG_TOO_LARGE when w*h overflows size_t, IMG_NOMEM when an allocation
 * fails, IMG_CORRUPT for any other libpng error (not expected). */
int img_png_encode_gray8(const uint8_t *px, int w, int h, uint8_t **out,
                         size_t *out_len, char *err, size_t errsz);

/* The same image as a PNG whose deflate stream is stored, not compressed
 * (zlib's "stored" blocks, RFC 1951 3.2.4), written directly without
 * libpng: no compressor to set up, so it costs a few microseconds where
 * img_png_encode_gray8 costs tens - the server echoes every request's
 * 28x28 input this way (812 bytes of rows, an 880-byte file).  Any PNG
 * decoder reads it.  Same contract and return codes as img_png_encode_gray8
 * (never IMG_CORRUPT). */
int img_png_store_gray8(const uint8_t *px, int w, int h, uint8_t **out,
                        size_t *out_len, char *err, size_t errsz);

#endif
