#ifndef XENT_XENT_HPP
#define XENT_XENT_HPP

// The umbrella header: everything public in xent (but xent/parallel/, which needs MPI).

#include "core/error.hpp"
#include "core/loss_result.hpp"
#include "core/lse_partial.hpp"
#include "core/reduction.hpp"
#include "core/spatial.hpp"
#include "version.hpp"

#include "logsumexp.hpp"
#include "softmax.hpp"

#include "losses/binary.hpp"
#include "losses/categorical.hpp"
#include "losses/cross_entropy.hpp"
#include "losses/distill.hpp"
#include "losses/focal.hpp"
#include "losses/gce.hpp"
#include "losses/hvp.hpp"
#include "losses/kl_div.hpp"
#include "losses/linear.hpp"
#include "losses/linear_divergence.hpp"
#include "losses/logit_divergence.hpp"
#include "losses/sample_weighting.hpp"
#include "losses/spatial.hpp"
#include "losses/topk_divergence.hpp"
#include "losses/policy.hpp"

#include "measures/divergence.hpp"

#include "metrics/binary.hpp"
#include "metrics/compare.hpp"
#include "metrics/evaluation.hpp"
#include "metrics/sequences.hpp"
#include "metrics/temperature.hpp"

#endif
