#ifndef XENT_CORE_ERROR_HPP
#define XENT_CORE_ERROR_HPP

#include <sstream>
#include <stdexcept>
#include <string>

namespace xent {

/// The one exception xent throws for misuse: bad shapes, empty inputs, values out of range.
///
/// Policy (docs/errors.md): every public function checks its arguments before it reads any data and
/// throws this on the first violation, with a message of the form
///   "xent::<function>: <argument> <expected>, but got <got>"
/// e.g. "xent::logsumexp: dim must be 0 or 1, but got 2". Numerical edge cases (NaN, +-inf in the
/// logits) are not misuse: they propagate as documented for each function.
class invalid_argument : public std::invalid_argument {
 public:
  /// what() is `message`; function() and argument() return the other two. xent builds the message as
  /// "xent::<function>: <argument> <expected>, but got <got>".
  invalid_argument(std::string function, std::string argument, const std::string& message)
      : std::invalid_argument(message), function_(std::move(function)), argument_(std::move(argument)) {}
  /// The public function that rejected its input, without the namespace ("logsumexp").
  const std::string& function() const noexcept { return function_; }
  /// The argument at fault, as it appears in the signature or docs ("dim", "out", "target[7]").
  const std::string& argument() const noexcept { return argument_; }

 private:
  std::string function_;
  std::string argument_;
};

namespace detail {

template <class Got>
[[noreturn]] void throw_invalid(const char* function, const std::string& argument, const std::string& expected,
                                const Got& got) {
  std::ostringstream message;
  message << "xent::" << function << ": " << argument << ' ' << expected << ", but got " << got;
  throw invalid_argument(function, argument, message.str());
}

}  // namespace detail
}  // namespace xent

#endif
