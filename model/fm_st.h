/* fm_st.h - weight files in the safetensors format.
 *
 * Layout: an 8-byte little-endian u64 N, N bytes of JSON header, then raw
 * little-endian F32 data.  The header maps tensor names to
 *   {"dtype":"F32","shape":[...],"data_offsets":[begin,end]}
 * (offsets relative to the start of the data section) and may hold
 * "__metadata__", an object of string -> string.  Tensor names and layouts
 * are PyTorch's for the equivalent torch.nn.Sequential: "i.weight" (linear
 * [out,in], conv2d [out,in,k,k]) and "i.bias" ([out]) for each layer i with
 * parameters, so `safetensors.torch.load_file` reads our files and we read a
 * state_dict saved by `safetensors.torch.save_file`.
 *
 * Metadata written by the saver (all values are strings; JSON ones are
 * compact JSON text):
 *   "format"       "pt" (what PyTorch's writer puts there)
 *   "architecture" fm_arch_to_json(&m->arch)       - always derived
 *   "classes"      JSON array of fm_class_names      - always derived
 *   "input"        {"shape":[C,H,W],"dtype":"float32","layout":"NCHW",
 *                   "scale":"pixel/255","range":[0,1],"background":"black"}
 * followed by every entry of m->meta in order ("training", "metrics",
 * "dataset", ...).  An m->meta entry named "format" or "input" replaces the
 * default value; one named "architecture" or "classes" is ignored.
 *
 * The loader trusts nothing: every length, offset, dtype and shape is checked
 * against the architecture before a byte of data is read, the data offsets
 * must tile the data section exactly (in any order: tensors are matched by
 * name), and a weight that is NaN or infinite rejects the file.  Files are
 * read whole into memory (our models are a few MB); the header is capped at
 * 100 MB.  Assumes a little-endian host (checked at compile time). */
#ifndef FM_ST_H
#define FM_ST_H

#include <stddef.h>
#include <stdint.h>

#include "fm_net.h"

#define FM_ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000) /* bytes of JSON header */
#define FM_ST_MAX_META 4096                            /* __metadata__ entries */

/* Loads a weight file into *m (overwritten: it must not own anything).  The
 * architecture comes from the "architecture" metadata; a file without it (one
 * exported from PyTorch) needs expect, and when both exist they must describe
 * the same layers (input shape, layer types, units, kernels, padding; layer
 * names and dropout rates may differ: the file's win).  A "classes" entry
 * must list fm_class_names in order.  On success m owns params and copies of
 * every metadata entry (file order), and m->sha256 is the hex SHA-256 of the
 * whole file; free with fm_model_free.  On failure returns -1 with *m zeroed,
 * nothing allocated, and err = "<path>: <what is wrong>". */
int fm_st_load(fm_model *m, const char *path, const fm_arch *expect, fm_error *err);
/* The same from memory (buf[0..len) is only read; the caller keeps it).
 * Error messages carry no file name. */
int fm_st_load_buffer(fm_model *m, const uint8_t *buf, size_t len, const fm_arch *expect, fm_error *err);

/* Serialises m into a new buffer (*out, *len; the caller frees *out).  The
 * output is deterministic: the same model and metadata give the same bytes.
 * Refuses parameters that are NaN or infinite (the loader would reject them). */
int fm_st_save_buffer(const fm_model *m, uint8_t **out, size_t *len, fm_error *err);
/* Writes m to path atomically: a temporary "<path>.tmp.XXXXXX" in the same
 * directory is written, fsync'ed and renamed over path, then the directory is
 * fsync'ed.  On failure the temporary is removed and path is untouched.  The
 * file is created with mode 0644. */
int fm_st_save(const fm_model *m, const char *path, fm_error *err);

#endif
