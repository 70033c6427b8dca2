/* fm_mpi.h - fmnist-train's MPI layer: joining the job mpirun started and
 * giving the training pool its fm_comm (fm_train.h), over Open MPI.
 *
 * Built only into fmnist-train (never the engine library, so fmnist-serve
 * never links MPI), and only when meson finds MPI (option `mpi`, auto).
 * Without it every function still exists: a run outside mpirun is a job of
 * one process, and one that mpirun started with more processes is refused
 * with a message saying how to build with MPI.  Left out: MPI's own
 * fault tolerance (a dead process ends the job: mpirun reports it), and
 * any MPI call off the main thread (the pool's threads never make one). */
#ifndef FM_MPI_H
#define FM_MPI_H

#include <stddef.h>

#include "fm_common.h"
#include "fm_train.h"

typedef struct fm_mpi {
    fm_comm comm; /* rank 0 of 1 when not in a job */
    int active;   /* MPI was started (MPI_Init_thread) and must be ended */
} fm_mpi;

/* The number of processes a launcher (mpirun) says it started, from its
 * environment; 0 when not started by one. */
size_t fm_mpi_launched(void);

/* Joins the job: MPI started when a launcher started this process and MPI
 * was built in; otherwise a job of one.  -1 with err when the launcher
 * started several processes and this build has no MPI. */
int fm_mpi_start(fm_mpi *m, int *argc, char ***argv, fm_error *err);

/* Ends this process's part normally (MPI_Finalize: every process calls it
 * once the job's collective calls are done).  Safe when not active. */
void fm_mpi_finish(fm_mpi *m);

/* Ends the whole job from this process, for a failure the others do not
 * share (they may be waiting in a collective call); does not return when
 * active, returns otherwise. */
void fm_mpi_abort(fm_mpi *m, int rc);

/* What `fmnist-train version` says about MPI, into buf. */
void fm_mpi_describe(char *buf, size_t n);

#endif
