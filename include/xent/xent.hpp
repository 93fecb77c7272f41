#ifndef XENT_XENT_HPP
#define XENT_XENT_HPP

// The umbrella header: everything public in xent.

#include "error.hpp"
#include "version.hpp"

#include "kernels/logsumexp.hpp"
#include "kernels/lse_partial.hpp"
#include "kernels/softmax.hpp"

#include "losses/binary.hpp"
#include "losses/categorical.hpp"
#include "losses/distill.hpp"
#include "losses/focal.hpp"
#include "losses/gce.hpp"
#include "losses/hvp.hpp"
#include "losses/linear.hpp"
#include "losses/options.hpp"

#include "measures/divergence.hpp"

#include "metrics/evaluation.hpp"
#include "metrics/temperature.hpp"

#endif
