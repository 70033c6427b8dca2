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

/* Hot loops compiled twice, for x86-64-v3 (AVX2 + FMA) and for any x86-64,
 * the copy picked at load time (target_clones), so the binary needs no
 * -march=native.  FM_HAVE_CLONES says whether that happens. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(FM_NO_CLONES) && \
    (defined(__clang__) ? (__clang_major__ >= 14) : (__GNUC__ >= 11))
#define FM_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#define FM_HAVE_CLONES 1
#else
#define FM_CLONES
#define FM_HAVE_CLONES 0
#endif

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
