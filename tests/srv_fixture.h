/* srv_fixture.h - files the server's Check tests (test_handlers.c,
 * test_oom.c) set up under a temporary directory, and its removal.  Each
 * function fails the running Check test on error. */
#ifndef SRV_FIXTURE_H
#define SRV_FIXTURE_H

#include <stdint.h>

/* Writes text to dir/name. */
void fx_write_file(const char *dir, const char *name, const char *text);
/* Saves a freshly initialised arch_name model (parameters from seed, test
 * accuracy 0.5 in its metadata) as weights_dir/arch_name.safetensors. */
void fx_save_model(const char *weights_dir, const char *arch_name, uint64_t seed);
/* Removes dir and everything under it (symbolic links not followed). */
void fx_remove_tree(const char *dir);

#endif
