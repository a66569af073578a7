/* mama_nccl.c - the NCCL communicator for data-parallel training on GPUs
 * (mama.h section 12, SPEC issue 8).
 *
 * NCCL moves device memory (the gradient all-reduce, the embedding
 * all-gathers of the global-batch losses, the initial weight broadcast)
 * between GPUs over NVLink / PCIe / InfiniBand; MPI launches the ranks,
 * carries NCCL's unique id from rank 0 to the others, and serves the small
 * host-memory collectives (BatchNorm statistics, loss scalars, counts).
 *
 * Build: `make cuda MPI=1` compiles this file with mpicc -DMAMA_NCCL
 * against the CUDA toolkit's nccl.h; link the program with
 * build/mama_nccl.o build/mama_cuda.o -L$CUDA_HOME/lib64 -lnccl -lcudart
 * (and the CUDA backend's libraries).  The MPI communicator it takes comes
 * from mama_comm_mpi_create (the companion header mama_mpi.h).  Each rank
 * selects its GPU (cudaSetDevice(local rank)) before mama_comm_nccl_create.
 *
 * Pass the CUDA backend's stream: mama_comm_nccl_create(&c, mpi, be->stream(be)).
 *
 * Status: compiled here, NOT run: the development machine has no GPU.  The
 * code paths it feeds (dev_* collectives) are the ones the MPI comm
 * exercises through host staging in tests/test_mpi.c. */
#include <stdlib.h>
#include <string.h>
#include <mpi.h>
#include <cuda_runtime.h>
#include <nccl.h>
#include "mama.h"

/* One stream for everything: given the CUDA backend's stream
 * (be->stream(be)), the collectives are queued on it behind the ops that
 * wrote their inputs and ahead of the ops that read their outputs, so
 * nothing waits on the host (a later to_host or sync of the backend waits
 * for them like for any op).  Without a stream (NULL) they run on the
 * legacy default stream, which does not order with the backend's
 * non-blocking stream: each op then waits for the whole device before and
 * after (correct, slow; only for a program that has no backend stream). */
typedef struct mama__nccl {
    ncclComm_t comm;
    cudaStream_t stream;   /* the backend's stream, or NULL (see above) */
    mama_comm *mpi;        /* host collectives */
} mama__nccl;

static mama_status mama__nccl_check(ncclResult_t r, const char *what) {
    if (r == ncclSuccess) return MAMA_OK;
    return MAMA_FAIL(MAMA_ERR_BACKEND, "NCCL %s failed: %s", what, ncclGetErrorString(r));
}
static mama_status mama__nccl_cuda(cudaError_t e, const char *what) {
    if (e == cudaSuccess) return MAMA_OK;
    return MAMA_FAIL(MAMA_ERR_BACKEND, "CUDA %s failed: %s", what, cudaGetErrorString(e));
}
/* before and after each op: nothing on the backend's stream, a device-wide
 * wait without it */
static mama_status mama__nccl_sync(mama__nccl *p) {
    return p->stream ? MAMA_OK : mama__nccl_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}

/* host memory: MPI */
static mama_status mama__nccl_h_allreduce(mama_comm *c, float *buf, size_t n) {
    mama_comm *m = ((mama__nccl *)c->impl)->mpi;
    return m->allreduce_sum_f32(m, buf, n);
}
static mama_status mama__nccl_h_allgather(mama_comm *c, const float *send, size_t n, float *recv) {
    mama_comm *m = ((mama__nccl *)c->impl)->mpi;
    return m->allgather_f32(m, send, n, recv);
}
static mama_status mama__nccl_h_allgatherv(mama_comm *c, const float *send, size_t n, float *recv, const size_t *counts) {
    mama_comm *m = ((mama__nccl *)c->impl)->mpi;
    return m->allgatherv_f32(m, send, n, recv, counts);
}
static mama_status mama__nccl_h_broadcast(mama_comm *c, float *buf, size_t n, int root) {
    mama_comm *m = ((mama__nccl *)c->impl)->mpi;
    return m->broadcast_f32(m, buf, n, root);
}
static mama_status mama__nccl_barrier(mama_comm *c) {
    mama_comm *m = ((mama__nccl *)c->impl)->mpi;
    return m->barrier(m);
}

/* device memory: NCCL */
static mama_status mama__nccl_allreduce(mama_comm *c, float *buf, size_t n) {
    mama__nccl *p = (mama__nccl *)c->impl;
    MAMA_TRY(mama__nccl_sync(p));
    MAMA_TRY(mama__nccl_check(ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, p->comm, p->stream), "AllReduce"));
    return mama__nccl_sync(p);
}
static mama_status mama__nccl_allgather(mama_comm *c, const float *send, size_t n, float *recv) {
    mama__nccl *p = (mama__nccl *)c->impl;
    MAMA_TRY(mama__nccl_sync(p));
    MAMA_TRY(mama__nccl_check(ncclAllGather(send, recv, n, ncclFloat, p->comm, p->stream), "AllGather"));
    return mama__nccl_sync(p);
}
/* NCCL has no all-gather with per-rank counts: one broadcast per rank in a
 * group (NCCL fuses them into one launch). */
static mama_status mama__nccl_allgatherv(mama_comm *c, const float *send, size_t n, float *recv, const size_t *counts) {
    mama__nccl *p = (mama__nccl *)c->impl;
    size_t off = 0;
    int r;
    ncclResult_t e = ncclSuccess;
    if (n != counts[c->rank]) return MAMA_FAIL(MAMA_ERR_INVALID, "NCCL allgatherv: n %zu != counts[rank] %zu", n, counts[c->rank]);
    MAMA_TRY(mama__nccl_sync(p));
    MAMA_TRY(mama__nccl_check(ncclGroupStart(), "GroupStart"));
    for (r = 0; r < c->size && e == ncclSuccess; r++) {
        if (counts[r] > 0)
            e = ncclBroadcast(r == c->rank ? (const void *)send : (const void *)(recv + off), recv + off, counts[r],
                              ncclFloat, r, p->comm, p->stream);
        off += counts[r];
    }
    MAMA_TRY(mama__nccl_check(e, "Broadcast"));
    MAMA_TRY(mama__nccl_check(ncclGroupEnd(), "GroupEnd"));
    return mama__nccl_sync(p);
}
static mama_status mama__nccl_broadcast(mama_comm *c, float *buf, size_t n, int root) {
    mama__nccl *p = (mama__nccl *)c->impl;
    MAMA_TRY(mama__nccl_sync(p));
    MAMA_TRY(mama__nccl_check(ncclBroadcast(buf, buf, n, ncclFloat, root, p->comm, p->stream), "Broadcast"));
    return mama__nccl_sync(p);
}

static void mama__nccl_destroy(mama_comm *c) {
    mama__nccl *p = (mama__nccl *)c->impl;
    if (p) {
        ncclCommDestroy(p->comm);
        free(p);
    }
    free(c);
}

MAMA_API mama_status mama_comm_nccl_create(mama_comm **out, mama_comm *mpi, void *stream) {
    mama_comm *c;
    mama__nccl *p;
    ncclUniqueId id;
    ncclResult_t r;
    *out = NULL;
    if (!mpi || !mpi->broadcast_f32) return MAMA_FAIL(MAMA_ERR_INVALID, "mama_comm_nccl_create: an MPI communicator is required");
    c = (mama_comm *)calloc(1, sizeof *c);
    p = (mama__nccl *)calloc(1, sizeof *p);
    if (!c || !p) { free(c); free(p); return MAMA_FAIL(MAMA_ERR_NOMEM, "mama_comm_nccl_create: out of memory"); }
    /* rank 0 makes the id, MPI carries it (as bytes) to every rank */
    memset(&id, 0, sizeof id);
    if (mpi->rank == 0 && (r = ncclGetUniqueId(&id)) != ncclSuccess) {
        free(c); free(p);
        return mama__nccl_check(r, "GetUniqueId");
    }
    if (MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD) != MPI_SUCCESS) {
        free(c); free(p);
        return MAMA_FAIL(MAMA_ERR_BACKEND, "MPI_Bcast of the NCCL unique id failed");
    }
    if ((r = ncclCommInitRank(&p->comm, mpi->size, id, mpi->rank)) != ncclSuccess) {
        free(c); free(p);
        return mama__nccl_check(r, "CommInitRank");
    }
    p->stream = (cudaStream_t)stream;
    p->mpi = mpi;
    c->name = "nccl";
    c->rank = mpi->rank;
    c->size = mpi->size;
    c->impl = p;
    c->allreduce_sum_f32 = mama__nccl_h_allreduce;
    c->allgather_f32 = mama__nccl_h_allgather;
    c->allgatherv_f32 = mama__nccl_h_allgatherv;
    c->broadcast_f32 = mama__nccl_h_broadcast;
    c->barrier = mama__nccl_barrier;
    c->dev_allreduce_sum_f32 = mama__nccl_allreduce;
    c->dev_allgather_f32 = mama__nccl_allgather;
    c->dev_allgatherv_f32 = mama__nccl_allgatherv;
    c->dev_broadcast_f32 = mama__nccl_broadcast;
    c->destroy = mama__nccl_destroy;
    *out = c;
    return MAMA_OK;
}
