/* fm_plan.c - slot assignment, the step list and its prepared weights, and the run
 * loop.  What each step does is decided by the layer types (fm_ops.c);
 * this file only holds and runs the result. */
#include "fm_plan.h"

#include <stdlib.h>
#include <string.h>


int fm_plan_slots(const fm_arch *a, int *slot) {
    int n = a->n_layers, n_slots = 0;
    int last_use[FM_MAX_LAYERS]; /* last layer reading layer i's value */
    int holder[FM_MAX_LAYERS];   /* value each slot holds (-1 free) */
    for (int i = 0; i < n; i++) last_use[i] = i == n - 1 ? n : i; /* the logits live to the end */
    for (int i = 0; i < n; i++)
        for (int k = 0; k < a->layers[i].n_in; k++) {
            int src = a->layers[i].in[k];
            if (src >= 0 && i > last_use[src]) last_use[src] = i;
        }
    /* an alias (flatten, eval dropout) extends the life of what it aliases */
    for (int i = n - 1; i >= 0; i--) {
        const fm_layer *L = &a->layers[i];
        if (L->alias_eval && L->in[0] >= 0 && last_use[i] > last_use[L->in[0]])
            last_use[L->in[0]] = last_use[i];
    }
    for (int i = 0; i < FM_MAX_LAYERS; i++) holder[i] = -1;
    for (int i = 0; i < n; i++) {
        const fm_layer *L = &a->layers[i];
        int src = L->in[0];
        if (L->alias_eval) {
            slot[i] = src >= 0 ? slot[src] : FM_SLOT_INPUT;
            if (slot[i] >= 0) holder[slot[i]] = i;
            continue;
        }
        int s = -1;
        if (L->in_place && src >= 0 && slot[src] >= 0 && last_use[src] == i) s = slot[src];
        for (int k = 0; s < 0 && k < n_slots + 1; k++) {
            int h = k < n_slots ? holder[k] : -1;
            if (h < 0 || last_use[h] < i) s = k;
        }
        if (s == n_slots) n_slots++;
        slot[i] = s;
        holder[s] = i;
    }
    return n_slots > 0 ? n_slots : 1;
}

fm_step *fm_plan_emit(fm_plan *p, const fm_arch *a, const int *slot, fm_step_fn run, int first, int last,
                      const float *params) {
    fm_step *grown = realloc(p->steps, (size_t)(p->n_steps + 1) * sizeof *grown);
    if (!grown) return NULL;
    p->steps = grown;
    fm_step *s = &p->steps[p->n_steps++];
    memset(s, 0, sizeof *s);
    const fm_layer *L = &a->layers[first];
    s->run = run;
    s->L = *L;
    s->first = first, s->last = last;
    s->n_in = L->n_in;
    for (int k = 0; k < L->n_in; k++) s->in[k] = L->in[k] >= 0 ? slot[L->in[k]] : FM_SLOT_INPUT;
    s->out = slot[last];
    s->mid = -1;
    s->p = params + L->p_off;
    return s;
}

float *fm_plan_alloc(fm_plan *p, size_t n) {
    float **grown = realloc(p->blocks, (size_t)(p->n_blocks + 1) * sizeof *grown);
    if (!grown) return NULL;
    p->blocks = grown;
    float *b = malloc((n ? n : 1) * sizeof *b);
    if (!b) return NULL;
    p->blocks[p->n_blocks++] = b;
    return b;
}

void fm_plan_free(fm_plan *p) {
    free(p->steps);
    for (int i = 0; i < p->n_blocks; i++) free(p->blocks[i]);
    free(p->blocks);
    memset(p, 0, sizeof *p);
}

const float *fm_plan_run(const fm_plan *p, const fm_run *r) {
    for (int i = 0; i < p->n_steps; i++) p->steps[i].run(&p->steps[i], r);
    return p->out_slot >= 0 ? r->slot[p->out_slot] : r->x;
}
