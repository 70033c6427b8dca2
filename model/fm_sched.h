/* fm_sched.h - learning-rate schedules, stepped per batch.
 *
 *   constant  lr throughout (the study's; --plateau may still lower it)
 *   cosine    linear warm-up from lr/warmup_div to lr over warmup steps,
 *             then cosine decay to min_lr at the last step
 *             (Loshchilov & Hutter's SGDR without restarts)
 *   onecycle  warm-up from lr/div to lr over the first pct of the steps
 *             (cosine-shaped, as PyTorch's OneCycleLR), then cosine
 *             annealing to lr/(div * final_div) at the last step
 *
 * The rate is a pure function of the step index, so a resumed run needs no
 * schedule state beyond its position (epoch, batch). */
#ifndef FM_SCHED_H
#define FM_SCHED_H

#include <stdint.h>

typedef enum fm_sched_kind { FM_SCHED_CONSTANT, FM_SCHED_COSINE, FM_SCHED_ONECYCLE } fm_sched_kind;

typedef struct fm_sched {
    fm_sched_kind kind;
    double lr;           /* base (cosine) or peak (onecycle) rate */
    double min_lr;       /* cosine: the final rate */
    uint64_t warmup;     /* cosine: warm-up steps */
    double warmup_div;   /* cosine: the warm-up starts at lr / warmup_div */
    double pct;          /* onecycle: fraction of the steps spent rising (0.3) */
    double div;          /* onecycle: the start is lr / div (25) */
    double final_div;    /* onecycle: the end is lr / (div * final_div) (1e4) */
    uint64_t total;      /* steps of the whole run */
} fm_sched;

/* The rate at step t (0-based, t < total). */
double fm_sched_lr(const fm_sched *s, uint64_t t);
/* "constant" / "cosine" / "onecycle" <-> kind; -1 when unknown */
int fm_sched_parse(const char *name);
const char *fm_sched_name(fm_sched_kind k);

#endif
