#ifndef XENT_TESTS_MISUSE_HPP
#define XENT_TESTS_MISUSE_HPP

// The error policy as a test table: each misuse must throw xent::invalid_argument whose function(),
// argument() and message ("xent::<function>: <argument> ..., but got ...") say what went wrong.

#include <xent/core/error.hpp>

#include <catch2/catch.hpp>

#include <cstddef>
#include <functional>
#include <string>

namespace xent_test {

struct misuse {
  const char* what;
  std::function<void()> call;
  const char* function;
  const char* argument;
  const char* piece;                  // a piece of the message (what was expected or got)
  const char* other_piece = nullptr;  // a second piece, when expected and got are far apart
};

/// Checks every row; returns how many threw xent::invalid_argument.
template <std::size_t N>
int check_misuse(const misuse (&table)[N]) {
  int thrown = 0;
  for (const misuse& m : table) {
    INFO(m.what);
    try {
      m.call();
      FAIL_CHECK("no exception");
    } catch (const xent::invalid_argument& e) {
      ++thrown;
      const std::string message = e.what();
      INFO(message);
      CHECK(e.function() == m.function);
      CHECK(e.argument() == m.argument);
      CHECK(message.rfind(std::string("xent::") + m.function + ": " + m.argument + " ", 0) == 0);
      CHECK(message.find(m.piece) != std::string::npos);
      if (m.other_piece) CHECK(message.find(m.other_piece) != std::string::npos);
    } catch (const std::exception& e) {
      FAIL_CHECK("wrong exception type: " << e.what());
    }
  }
  return thrown;
}

}  // namespace xent_test

#endif
