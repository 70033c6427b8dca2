/* fm_sched.c - the schedules of fm_sched.h. */
#include "fm_sched.h"

#include <math.h>
#include <string.h>

static const double PI = 3.14159265358979323846;

/* cos-shaped interpolation from a (f = 0) to b (f = 1) */
static double cos_between(double a, double b, double f) { return b + (a - b) * 0.5 * (1.0 + cos(PI * f)); }

double fm_sched_lr(const fm_sched *s, uint64_t t) {
    double T = s->total > 0 ? (double)s->total : 1.0;
    switch (s->kind) {
    case FM_SCHED_CONSTANT: return s->lr;
    case FM_SCHED_COSINE: {
        if (t < s->warmup) {
            double start = s->lr / (s->warmup_div > 0 ? s->warmup_div : 1.0);
            return start + (s->lr - start) * (double)t / (double)s->warmup;
        }
        double rest = T - (double)s->warmup - 1.0;
        double f = rest > 0 ? ((double)t - (double)s->warmup) / rest : 1.0;
        return cos_between(s->lr, s->min_lr, f > 1.0 ? 1.0 : f);
    }
    case FM_SCHED_ONECYCLE: {
        double start = s->lr / s->div, end = start / s->final_div;
        double up = floor(s->pct * T) - 1.0; /* PyTorch: the peak at step pct * total - 1 */
        if (up < 1.0) up = 1.0;
        if ((double)t <= up) return cos_between(start, s->lr, (double)t / up);
        double down = T - 1.0 - up;
        double f = down > 0 ? ((double)t - up) / down : 1.0;
        return cos_between(s->lr, end, f > 1.0 ? 1.0 : f);
    }
    }
    return s->lr;
}

int fm_sched_parse(const char *name) {
    if (strcmp(name, "constant") == 0) return FM_SCHED_CONSTANT;
    if (strcmp(name, "cosine") == 0) return FM_SCHED_COSINE;
    if (strcmp(name, "onecycle") == 0) return FM_SCHED_ONECYCLE;
    return -1;
}

const char *fm_sched_name(fm_sched_kind k) {
    return k == FM_SCHED_COSINE ? "cosine" : k == FM_SCHED_ONECYCLE ? "onecycle" : "constant";
}
