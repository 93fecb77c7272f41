#ifndef XENT_TESTS_MISUSE_HPP
#define XENT_TESTS_MISUSE_HPP

// The error policy as a test table: each misuse must throw xent::invalid_argument whose function(),
// argument() and message ("xent::<function>: <argument> ..., but got ...") say what went wrong.

#include <xent/error.hpp>

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

template <std::size_t N>
void check_misuse(const misuse (&table)[N]) {
  for (const misuse& m : table) {
    INFO(m.what);
    try {
      m.call();
      FAIL("no exception");
    } catch (const xent::invalid_argument& e) {
      const std::string message = e.what();
      INFO(message);
      CHECK(e.function() == m.function);
      CHECK(e.argument() == m.argument);
      CHECK(message.rfind(std::string("xent::") + m.function + ": " + m.argument + " ", 0) == 0);
      CHECK(message.find(m.piece) != std::string::npos);
      if (m.other_piece) CHECK(message.find(m.other_piece) != std::string::npos);
    }
  }
}

}  // namespace xent_test

#endif
