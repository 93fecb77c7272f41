# Runs xent-eval once and checks what it did; the driver of the cli.* CTest tests.
#
#   cmake -DTOOL=<xent-eval> -DARGS=<args separated by |> -DEXPECT=success|error|usage
#         [-DREGEX=<regex the output must match>] [-DOUT_REGEX=<regex standard output must match>]
#         [-DOUTPUT=<file to keep stdout in>] [-DSTDOUT=<file standard output goes to instead>]
#         [-DWRAP=<command prefix separated by |>] [-DABSENT=<files that must not exist after, by |>]
#         [-DCOMPARE=<xent_eval_inputs> -DEXPECTED=<expected.txt> -DTOLERANCE=<t> [-DKEYS=<k1|k2>]]
#         [-DSAME_FILES=<written|expected>]
#         -P run_xent_eval.cmake
#
# EXPECT=success: exit 0. EXPECT=error: exit 1 (xent-eval's own "xent-eval: error: ..." message on
# standard error). EXPECT=usage: a non-zero exit code from the command-line parser. A crash (a
# signal) or a hang (30 s) never passes. REGEX is matched against standard error for errors,
# standard output otherwise. WRAP runs xent-eval through a wrapper (xent_eval_inputs run ... --).
# The files named by ABSENT are removed before the run. After it, no temporary file of an --svg
# file may be left behind. SAME_FILES: after the run, the two files must hold the same bytes.
cmake_minimum_required(VERSION 3.21)

string(REPLACE "|" ";" args "${ARGS}")
string(REPLACE "|" ";" wrap "${WRAP}")
string(REPLACE "|" ";" absent "${ABSENT}")
if(absent)
  file(REMOVE ${absent})
endif()
set(out_args OUTPUT_VARIABLE out)
if(DEFINED STDOUT)
  set(out_args OUTPUT_FILE "${STDOUT}")
endif()
execute_process(COMMAND ${wrap} "${TOOL}" ${args} RESULT_VARIABLE code ${out_args} ERROR_VARIABLE err TIMEOUT 30)
message(STATUS "${wrap} xent-eval ${args}\n-- exit: ${code}\n-- stdout:\n${out}\n-- stderr:\n${err}")

if(NOT code MATCHES "^[0-9]+$")
  message(FATAL_ERROR "xent-eval did not exit normally: ${code}")
endif()
if(EXPECT STREQUAL "success")
  if(NOT code EQUAL 0)
    message(FATAL_ERROR "expected success, got exit code ${code}")
  endif()
  set(text "${out}")
elseif(EXPECT STREQUAL "error")
  if(NOT code EQUAL 1)
    message(FATAL_ERROR "expected exit code 1, got ${code}")
  endif()
  if(NOT err MATCHES "^xent-eval: error: ")
    message(FATAL_ERROR "the error message does not start with 'xent-eval: error: '")
  endif()
  set(text "${err}")
elseif(EXPECT STREQUAL "usage")
  if(code EQUAL 0)
    message(FATAL_ERROR "expected a usage error, got exit code 0")
  endif()
  set(text "${err}")
else()
  message(FATAL_ERROR "EXPECT must be success, error or usage")
endif()

if(DEFINED REGEX AND NOT text MATCHES "${REGEX}")
  message(FATAL_ERROR "the output does not match '${REGEX}'")
endif()
if(DEFINED OUT_REGEX AND NOT out MATCHES "${OUT_REGEX}")
  message(FATAL_ERROR "standard output does not match '${OUT_REGEX}'")
endif()
foreach(f IN LISTS absent)
  if(EXISTS "${f}")
    message(FATAL_ERROR "${f} exists; it should not")
  endif()
endforeach()
list(FIND args "--svg" at)
if(at GREATER_EQUAL 0)
  math(EXPR at "${at} + 1")
  list(GET args ${at} svg)
  file(GLOB leftovers "${svg}.tmp-*")
  if(leftovers)
    message(FATAL_ERROR "temporary files left behind: ${leftovers}")
  endif()
endif()
if(DEFINED OUTPUT)
  file(WRITE "${OUTPUT}" "${out}")
endif()
if(DEFINED COMPARE)
  string(REPLACE "|" ";" keys "${KEYS}")
  file(WRITE "${OUTPUT}.json" "${out}")
  execute_process(COMMAND "${COMPARE}" compare "${EXPECTED}" "${OUTPUT}.json" "${TOLERANCE}" ${keys} RESULT_VARIABLE ccode)
  if(NOT ccode EQUAL 0)
    message(FATAL_ERROR "the report differs from the library's")
  endif()
endif()
if(DEFINED SAME_FILES)
  string(REPLACE "|" ";" same "${SAME_FILES}")
  list(GET same 0 written)
  list(GET same 1 wanted)
  execute_process(COMMAND ${CMAKE_COMMAND} -E compare_files "${written}" "${wanted}" RESULT_VARIABLE scode)
  if(NOT scode EQUAL 0)
    message(FATAL_ERROR "${written} differs from ${wanted}")
  endif()
endif()
