/* fm_mpi.c - the MPI layer of fmnist-train (fm_mpi.h): MPI_Init_thread
 * when a launcher started the process, an fm_comm whose all-gather is
 * MPI_Allgather on MPI_COMM_WORLD, and the no-MPI build's refusal.
 *
 * MPI_Allgather, not MPI_Allreduce: the pool sums the gathered shards
 * itself, in shard order, so the result does not depend on MPI's reduction
 * order.  Errors keep MPI's default handler (MPI_ERRORS_ARE_FATAL): a
 * failed exchange ends the job with MPI's message instead of returning
 * half a gradient.  Left out: other communicators than the world. */
#include "fm_mpi.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if FM_HAVE_MPI
#include <mpi.h>
#endif

size_t fm_mpi_launched(void) {
    /* Open MPI's mpirun, then the PMI variables of MPICH's hydra and Slurm */
    static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) {
            char *end;
            unsigned long n = strtoul(v, &end, 10);
            if (!*end && n > 0) return (size_t)n;
        }
    }
    return 0;
}

#if FM_HAVE_MPI

/* Messages over INT_MAX bytes go as a contiguous type of n / k bytes. */
static void mpi_allgather(fm_comm *c, const void *send, void *recv, size_t n) {
    (void)c;
    if (n <= INT_MAX) {
        MPI_Allgather(send, (int)n, MPI_BYTE, recv, (int)n, MPI_BYTE, MPI_COMM_WORLD);
        return;
    }
    size_t k = 1;
    while (n / k > INT_MAX || n % k) k++;
    MPI_Datatype t;
    MPI_Type_contiguous((int)(n / k), MPI_BYTE, &t);
    MPI_Type_commit(&t);
    MPI_Allgather(send, (int)k, t, recv, (int)k, t, MPI_COMM_WORLD);
    MPI_Type_free(&t);
}

int fm_mpi_start(fm_mpi *m, int *argc, char ***argv, fm_error *err) {
    memset(m, 0, sizeof *m);
    m->comm.n_ranks = 1;
    if (fm_mpi_launched() == 0) return 0;
    int provided = 0, rank = 0, size = 1;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return fm_seterr(err, "MPI_Init_thread failed");
    m->active = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (provided < MPI_THREAD_FUNNELED) /* the caller ends the job (fm_mpi_abort) */
        return fm_seterr(err, "this MPI library cannot run beside threads (no MPI_THREAD_FUNNELED)");
    m->comm.rank = (size_t)rank;
    m->comm.n_ranks = (size_t)size;
    m->comm.allgather = mpi_allgather;
    return 0;
}

void fm_mpi_finish(fm_mpi *m) {
    if (m->active) MPI_Finalize();
    m->active = 0;
}

void fm_mpi_abort(fm_mpi *m, int rc) {
    if (m->active) MPI_Abort(MPI_COMM_WORLD, rc ? rc : 1);
}

void fm_mpi_describe(char *buf, size_t n) {
    char lib[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(lib, &len);
    char *nl = strchr(lib, ','); /* "Open MPI v4.1.4, package: ...": the name and version */
    if (nl) *nl = '\0';
    snprintf(buf, n, "mpi: %s (mpirun -np N fmnist-train train ... trains data-parallel)", lib);
}

#else

int fm_mpi_start(fm_mpi *m, int *argc, char ***argv, fm_error *err) {
    (void)argc, (void)argv;
    memset(m, 0, sizeof *m);
    m->comm.n_ranks = 1;
    size_t n = fm_mpi_launched();
    if (n > 1)
        return fm_seterr(err, "this fmnist-train was built without MPI, so it cannot train as one of the %zu "
                         "processes mpirun started; rebuild with MPI (apt-get install libopenmpi-dev, then meson "
                         "setup -Dmpi=enabled) or run it outside mpirun", n);
    return 0;
}

void fm_mpi_finish(fm_mpi *m) { (void)m; }

void fm_mpi_abort(fm_mpi *m, int rc) { (void)m, (void)rc; }

void fm_mpi_describe(char *buf, size_t n) {
    snprintf(buf, n, "mpi: none (built without MPI: install libopenmpi-dev and meson setup -Dmpi=enabled)");
}

#endif
