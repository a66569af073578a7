/* tests/dropin/decl_only.c - a file that includes mama.h and its companions
 * without an IMPLEMENTATION macro, as every other file of a program does:
 * it must define nothing (tests/check_dropin.sh checks with nm), or two
 * such files would clash at link time. */
#include "mama.h"
#include "mama_plot.h"
#include "mama_synth.h"
#include "mama_tokenizer_train.h"
#include "mama_verify.h"
#include "mama_mpi.h"
