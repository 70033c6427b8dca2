/* fm_common.h - shared vocabulary of the fmnist engine: error reporting,
 * class names, data-set geometry.
 *
 * Error policy (see ../shared/STYLE.md): library functions return 0 on
 * success and -1 on failure, and on failure write a message a person can act
 * on into the caller's fm_error (which may be NULL when the caller does not
 * care).  Nothing in model/ prints or exits. */
#ifndef FM_COMMON_H
#define FM_COMMON_H

#include <stddef.h>
#include <stdint.h>

#define FM_N_CLASSES 10
#define FM_IMG_H 28
#define FM_IMG_W 28
#define FM_IMG_SIZE (FM_IMG_H * FM_IMG_W) /* 784 */

/* Label order of Fashion-MNIST. */
extern const char *const fm_class_names[FM_N_CLASSES];

typedef struct fm_error {
    char msg[512];
} fm_error;

#if defined(__GNUC__)
#define FM_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define FM_PRINTF(a, b)
/* Prepends "prefix: " to err's message (e.g. a file name); no-op when err is NULL. */
void fm_err_prefix(fm_error *err, const char *prefix);

#endif

/* Formats a message into err (no-op when err is NULL); always returns -1 so
 * that callers can write `return fm_seterr(err, "...")`. */
int fm_seterr(fm_error *err, const char *fmt, ...) FM_PRINTF(2, 3);

/* Prepends "prefix: " to err's message (e.g. a file name); no-op when err is NULL. */
void fm_err_prefix(fm_error *err, const char *prefix);

#endif
