/* mama_mpi.h - the MPI communicator for mama.h's data-parallel training:
 *              the mama_comm table (mama.h section 1.19) over MPI_COMM_WORLD
 *              and host memory.  A companion single-file header: a program
 *              that trains in one process does not need it, and mama.h
 *              itself has no MPI dependency.
 *
 * ===========================================================================
 *  USAGE
 * ===========================================================================
 *  mama.h must be included first.  In exactly one C or C++ file:
 *
 *      #include "mama.h"               (MAMA_IMPLEMENTATION in one file)
 *      #define MAMA_MPI_IMPLEMENTATION
 *      #include "mama_mpi.h"
 *
 *  everywhere else just include both headers.  Only the implementation
 *  includes <mpi.h>: compile that file with an MPI compiler wrapper
 *  (`mpicc`, `make MPI=1`) and launch with `mpirun -np N`.  It uses only
 *  the public API of mama.h (the mama_comm table), so it may live in a
 *  different translation unit than MAMA_IMPLEMENTATION.  Errors work as in
 *  mama.h: every function that can fail returns a mama_status and leaves a
 *  message for mama_last_error(); MPI errors come back as return codes
 *  (MPI_ERRORS_RETURN on the communicator), nothing exits or aborts.
 *
 *      mama_comm *comm = NULL;          // MPI_Init_thread unless MPI is up
 *      if (mama_comm_mpi_create(&comm) != MAMA_OK ||
 *          mama_model_set_comm(m, comm, MAMA_DP_GLOBAL) != MAMA_OK)
 *          fprintf(stderr, "mpi: %s\n", mama_last_error());
 *      // every rank: mama_pretrain(m, d, &opts, &res), which trains on the
 *      // rank's slice of each global batch (rank 0 alone writes files)
 *      mama_model_free(m);
 *      mama_comm_free(comm);            // MPI_Finalize if it initialised MPI
 *
 *  LICENSE: MIT (see README.md).
 */
#ifndef MAMA_MPI_H_INCLUDED
#define MAMA_MPI_H_INCLUDED

#ifndef MAMA_H_INCLUDED
#error "mama_mpi.h needs mama.h: include mama.h first"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------
 * 1. PUBLIC API
 * ------------------------------------------------------------------------- */

/* MPI over MPI_COMM_WORLD, host memory: every host op of struct mama_comm
 * plus the non-blocking all-reduce (which lets the gradient sum overlap the
 * backward on the CPU backend); the dev_* ops are NULL (device buffers are
 * staged through host memory; mama_nccl.c moves them with NCCL).  Calls
 * MPI_Init_thread (MPI_THREAD_FUNNELED) when MPI is not initialised yet,
 * and then MPI_Finalize in mama_comm_free. */
MAMA_API mama_status mama_comm_mpi_create(mama_comm **out);

#ifdef __cplusplus
}
#endif
#endif /* MAMA_MPI_H_INCLUDED */

/* ---------------------------------------------------------------------------
 * IMPLEMENTATION
 * ------------------------------------------------------------------------- */
#ifdef MAMA_MPI_IMPLEMENTATION
#ifndef MAMA_MPI_IMPLEMENTATION_DONE
#define MAMA_MPI_IMPLEMENTATION_DONE

#include <limits.h>
/* only MPI's C API is used: keep the (deprecated) C++ bindings out */
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------
 * 2. THE IMPLEMENTATION
 * MPI counts are ints: reductions and broadcasts go in chunks of 2^28
 * floats; gathers must fit an int (they are embeddings, far below).
 * ------------------------------------------------------------------------- */
typedef struct mama__mpi {
    MPI_Comm comm;          /* a duplicate of MPI_COMM_WORLD with MPI_ERRORS_RETURN */
    int finalize;           /* we initialised MPI, so we finalise it */
    int *counts, *displs;   /* [size] for allgatherv */
} mama__mpi;
#define MAMA__MPI_CHUNK ((size_t)1 << 28)

static mama_status mama__mpi_check(int rc, const char *what) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (rc == MPI_SUCCESS) return MAMA_OK;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) len = 0;
    return MAMA_FAIL(MAMA_ERR_BACKEND, "MPI_%s failed (error %d): %.*s", what, rc, len, msg);
}
static mama_status mama__mpi_allreduce(mama_comm *c, float *buf, size_t n) {
    mama__mpi *p = (mama__mpi *)c->impl;
    size_t off;
    for (off = 0; off < n; off += MAMA__MPI_CHUNK) {
        size_t k = n - off < MAMA__MPI_CHUNK ? n - off : MAMA__MPI_CHUNK;
        MAMA_TRY(mama__mpi_check(MPI_Allreduce(MPI_IN_PLACE, buf + off, (int)k, MPI_FLOAT, MPI_SUM, p->comm),
                                 "Allreduce"));
    }
    return MAMA_OK;
}
static mama_status mama__mpi_allgather(mama_comm *c, const float *send, size_t n, float *recv) {
    mama__mpi *p = (mama__mpi *)c->impl;
    if (n * (size_t)c->size > (size_t)INT_MAX)
        return MAMA_FAIL(MAMA_ERR_INVALID, "MPI allgather of %zu x %d floats exceeds MPI's int counts", n, c->size);
    return mama__mpi_check(MPI_Allgather(send, (int)n, MPI_FLOAT, recv, (int)n, MPI_FLOAT, p->comm),
                           "Allgather");
}
static mama_status mama__mpi_allgatherv(mama_comm *c, const float *send, size_t n, float *recv, const size_t *counts) {
    mama__mpi *p = (mama__mpi *)c->impl;
    size_t total = 0;
    int r;
    for (r = 0; r < c->size; r++) {
        if (total + counts[r] > (size_t)INT_MAX)
            return MAMA_FAIL(MAMA_ERR_INVALID, "MPI allgatherv of more than INT_MAX floats");
        p->counts[r] = (int)counts[r];
        p->displs[r] = (int)total;
        total += counts[r];
    }
    if (n != counts[c->rank]) return MAMA_FAIL(MAMA_ERR_INVALID, "allgatherv: n %zu != counts[rank] %zu", n, counts[c->rank]);
    return mama__mpi_check(MPI_Allgatherv(send, (int)n, MPI_FLOAT, recv, p->counts, p->displs,
                                          MPI_FLOAT, p->comm), "Allgatherv");
}
static mama_status mama__mpi_broadcast(mama_comm *c, float *buf, size_t n, int root) {
    mama__mpi *p = (mama__mpi *)c->impl;
    size_t off;
    for (off = 0; off < n; off += MAMA__MPI_CHUNK) {
        size_t k = n - off < MAMA__MPI_CHUNK ? n - off : MAMA__MPI_CHUNK;
        MAMA_TRY(mama__mpi_check(MPI_Bcast(buf + off, (int)k, MPI_FLOAT, root, p->comm), "Bcast"));
    }
    return MAMA_OK;
}
static mama_status mama__mpi_barrier(mama_comm *c) {
    return mama__mpi_check(MPI_Barrier(((mama__mpi *)c->impl)->comm), "Barrier");
}
/* A non-blocking sum: one MPI_Iallreduce (MPI_IN_PLACE) per chunk of 2^28
 * floats, their requests kept in one allocation. */
typedef struct mama__mpi_req {
    int n;
    MPI_Request *r;
} mama__mpi_req;
static mama_status mama__mpi_iallreduce(mama_comm *c, float *buf, size_t n, void **req) {
    mama__mpi *p = (mama__mpi *)c->impl;
    mama__mpi_req *q = NULL;
    size_t off, chunks = n ? (n + MAMA__MPI_CHUNK - 1) / MAMA__MPI_CHUNK : 1;
    int rc = MPI_SUCCESS;
    *req = NULL;
    MAMA_TRY(mama_alloc((void **)&q, sizeof *q + chunks * sizeof(MPI_Request), "MPI request"));
    q->r = (MPI_Request *)(void *)(q + 1);
    q->n = 0; /* n = 0: no request (Testall / Waitall of none complete at once) */
    for (off = 0; off < n; off += MAMA__MPI_CHUNK) {
        size_t len = n - off < MAMA__MPI_CHUNK ? n - off : MAMA__MPI_CHUNK;
        rc = MPI_Iallreduce(MPI_IN_PLACE, buf + off, (int)len, MPI_FLOAT, MPI_SUM, p->comm, &q->r[q->n]);
        if (rc != MPI_SUCCESS) break;
        q->n++;
    }
    if (rc != MPI_SUCCESS) { /* the chunks already started must still complete */
        if (q->n) MPI_Waitall(q->n, q->r, MPI_STATUSES_IGNORE);
        mama_free(q);
        return mama__mpi_check(rc, "Iallreduce");
    }
    *req = q;
    return MAMA_OK;
}
static mama_status mama__mpi_test(mama_comm *c, void *req, int *done) {
    mama__mpi_req *q = (mama__mpi_req *)req;
    int flag = 0, rc;
    (void)c;
    *done = 0;
    rc = MPI_Testall(q->n, q->r, &flag, MPI_STATUSES_IGNORE);
    if (rc != MPI_SUCCESS) return mama__mpi_check(rc, "Testall");
    if (flag) {
        mama_free(q);
        *done = 1;
    }
    return MAMA_OK;
}
static mama_status mama__mpi_wait(mama_comm *c, void *req) {
    mama__mpi_req *q = (mama__mpi_req *)req;
    int rc;
    (void)c;
    rc = MPI_Waitall(q->n, q->r, MPI_STATUSES_IGNORE);
    mama_free(q);
    return mama__mpi_check(rc, "Waitall");
}
static void mama__mpi_destroy(mama_comm *c) {
    mama__mpi *p = (mama__mpi *)c->impl;
    if (p) {
        int finalized = 0;
        MPI_Finalized(&finalized);
        if (!finalized) {
            MPI_Comm_free(&p->comm);
            if (p->finalize) MPI_Finalize();
        }
        mama_free(p->counts);
        mama_free(p->displs);
        mama_free(p);
    }
    mama_free(c);
}

MAMA_API mama_status mama_comm_mpi_create(mama_comm **out) {
    mama_comm *c = NULL;
    mama__mpi *p = NULL;
    int init = 0, provided = 0;
    *out = NULL;
    MPI_Initialized(&init);
    MAMA_TRY(mama_calloc((void **)&c, sizeof *c, "MPI communicator"));
    if (mama_calloc((void **)&p, sizeof *p, "MPI communicator") != MAMA_OK) { mama_free(c); return MAMA_ERR_NOMEM; }
    c->impl = p;
    if (!init) {
        /* loader threads never call MPI; only the training thread does */
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
            mama_free(p); mama_free(c);
            return MAMA_FAIL(MAMA_ERR_BACKEND, "MPI_Init_thread failed");
        }
        p->finalize = 1;
    }
    if (MPI_Comm_dup(MPI_COMM_WORLD, &p->comm) != MPI_SUCCESS) {
        if (p->finalize) MPI_Finalize();
        mama_free(p); mama_free(c);
        return MAMA_FAIL(MAMA_ERR_BACKEND, "MPI_Comm_dup failed");
    }
    /* errors come back as return codes (the library never aborts) */
    MPI_Comm_set_errhandler(p->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(p->comm, &c->rank);
    MPI_Comm_size(p->comm, &c->size);
    if (mama_calloc((void **)&p->counts, sizeof(int) * (size_t)c->size, "MPI communicator") != MAMA_OK ||
        mama_calloc((void **)&p->displs, sizeof(int) * (size_t)c->size, "MPI communicator") != MAMA_OK) {
        mama__mpi_destroy(c);
        return MAMA_ERR_NOMEM;
    }
    c->name = "mpi";
    c->allreduce_sum_f32 = mama__mpi_allreduce;
    c->allgather_f32 = mama__mpi_allgather;
    c->allgatherv_f32 = mama__mpi_allgatherv;
    c->broadcast_f32 = mama__mpi_broadcast;
    c->barrier = mama__mpi_barrier;
    c->destroy = mama__mpi_destroy;
    c->iallreduce_sum_f32 = mama__mpi_iallreduce;
    c->test = mama__mpi_test;
    c->wait = mama__mpi_wait;
    *out = c;
    return MAMA_OK;
}

#ifdef __cplusplus
}
#endif
#endif /* MAMA_MPI_IMPLEMENTATION_DONE */
#endif /* MAMA_MPI_IMPLEMENTATION */
