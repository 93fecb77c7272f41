# xent-eval end to end: xent_eval_inputs writes small .npy files (good and bad) and the library's
# own report of the good ones; each cli.* test runs xent-eval once through run_xent_eval.cmake.
# Included from tests/CMakeLists.txt when the xent-eval target exists.

add_executable(xent_eval_inputs ${CMAKE_CURRENT_LIST_DIR}/make_inputs.cpp)
target_include_directories(xent_eval_inputs PRIVATE ${PROJECT_SOURCE_DIR}/tools/xent-eval)
target_link_libraries(xent_eval_inputs PRIVATE ${XENT_DEV_LINK})
# xent-eval's flags, not XENT_DEV_FLAGS: the library's report it writes (expected.txt) is then the
# same arithmetic as the tool's, on the same ISA, and COMPARE can hold them to 1e-15.
target_compile_options(xent_eval_inputs PRIVATE ${XENT_PORTABLE_FLAGS})

set(cli_dir ${CMAKE_CURRENT_BINARY_DIR}/cli)
add_test(NAME cli.make_inputs COMMAND ${CMAKE_COMMAND} -E make_directory ${cli_dir})
add_test(NAME cli.write_inputs COMMAND xent_eval_inputs make ${cli_dir})
set_tests_properties(cli.make_inputs PROPERTIES FIXTURES_SETUP xent_eval_dir)
set_tests_properties(cli.write_inputs PROPERTIES FIXTURES_REQUIRED xent_eval_dir FIXTURES_SETUP xent_eval_inputs)

# xent_eval_test(NAME EXPECT ARGS <args...> [REGEX r] [OUT_REGEX r] [STDOUT file] [WRAP <conditions...>]
#                [ABSENT <files...>] [COMPARE tolerance [KEYS k...]])
# File names in ARGS and ABSENT, and the FILE of a WRAP truncate=FILE:BYTES, are relative to
# ${cli_dir}. WRAP runs xent-eval through `xent_eval_inputs run <conditions> --` (Linux).
function(xent_eval_test name expect)
  cmake_parse_arguments(PARSE_ARGV 2 T "" "REGEX;OUT_REGEX;STDOUT;COMPARE" "ARGS;KEYS;WRAP;ABSENT")
  set(args "")
  foreach(a IN LISTS T_ARGS)
    if(a MATCHES "\\.(npy|svg)$")
      set(a "${cli_dir}/${a}")
    endif()
    list(APPEND args "${a}")
  endforeach()
  set(absent "")
  foreach(a IN LISTS T_ABSENT)
    list(APPEND absent "${cli_dir}/${a}")
  endforeach()
  list(JOIN args "|" joined)
  list(JOIN T_KEYS "|" keys)
  list(JOIN absent "|" absent)
  set(defs -DTOOL=$<TARGET_FILE:xent-eval> "-DARGS=${joined}" -DEXPECT=${expect} -DOUTPUT=${cli_dir}/${name}.out "-DABSENT=${absent}")
  if(DEFINED T_WRAP)
    list(TRANSFORM T_WRAP REPLACE "^truncate=" "truncate=${cli_dir}/")
    list(JOIN T_WRAP "|" wrap)
    list(APPEND defs "-DWRAP=$<TARGET_FILE:xent_eval_inputs>|run|${wrap}|--")
  endif()
  foreach(key REGEX OUT_REGEX STDOUT)
    if(DEFINED T_${key})
      list(APPEND defs "-D${key}=${T_${key}}")
    endif()
  endforeach()
  if(DEFINED T_COMPARE)
    list(APPEND defs -DCOMPARE=$<TARGET_FILE:xent_eval_inputs> -DEXPECTED=${cli_dir}/expected.txt -DTOLERANCE=${T_COMPARE} "-DKEYS=${keys}")
  endif()
  add_test(NAME cli.${name} COMMAND ${CMAKE_COMMAND} ${defs} -P ${CMAKE_CURRENT_FUNCTION_LIST_DIR}/run_xent_eval.cmake)
  set_tests_properties(cli.${name} PROPERTIES FIXTURES_REQUIRED xent_eval_inputs LABELS cli)
endfunction()

# ---- good input: the numbers of the library, however the file is read
xent_eval_test(help success ARGS --help REGEX "--fit-temperature")
xent_eval_test(text_report success ARGS logits_f4.npy targets_i8.npy
               REGEX "perplexity .*accuracy +top-1 .*ECE .*reliability")
set(report_keys samples ignored nll nll_stderr perplexity accuracy top_k_accuracy brier ece mce bits_per_character bits_per_byte)
xent_eval_test(json_matches_library success ARGS logits_f4.npy targets_i8.npy --json --characters 1000 --bytes 2000
               COMPARE 1e-15 KEYS ${report_keys})
# 0.0001 MB = 100 bytes: 3 samples per chunk, 100 chunks; only the order of the sums changes.
xent_eval_test(chunked_matches_library success ARGS logits_f4.npy targets_i8.npy --json --chunk-mb 0.0001 --characters 1000 --bytes 2000
               COMPARE 1e-12 KEYS ${report_keys})
xent_eval_test(chunked_read_path success ARGS logits_f4.npy targets_i8.npy --json --chunk-mb 0.0001 --no-mmap --characters 1000 --bytes 2000
               COMPARE 1e-12 KEYS ${report_keys})
xent_eval_test(chunked_three_threads success ARGS logits_f4.npy targets_i8.npy --json --chunk-mb 0.0001 --threads 3 --characters 1000
               --bytes 2000 COMPARE 1e-12 KEYS ${report_keys})
xent_eval_test(whole_file_read_once success ARGS logits_f4.npy targets_i8.npy --json --no-mmap --fit-temperature
               COMPARE 1e-9 KEYS samples nll ece fitted_temperature ece_after)
xent_eval_test(float64_int32 success ARGS logits_f8.npy targets_i4.npy --json COMPARE 1e-6 KEYS samples ignored nll accuracy ece)
xent_eval_test(npy_version_2 success ARGS logits_v2.npy targets_i8.npy --json COMPARE 1e-15 KEYS samples nll ece)
xent_eval_test(npy_other_spacing success ARGS logits_spaced.npy targets_i8.npy --json COMPARE 1e-15 KEYS samples nll ece)
xent_eval_test(fit_temperature success ARGS logits_f4.npy targets_i8.npy --fit-temperature --json
               COMPARE 1e-9 KEYS fitted_temperature ece_after)
xent_eval_test(fit_temperature_streamed success ARGS logits_f4.npy targets_i8.npy --fit-temperature --json --chunk-mb 0.001
               COMPARE 1e-6 KEYS fitted_temperature ece_after)
xent_eval_test(svg success ARGS logits_f4.npy targets_i8.npy --svg reliability.svg REGEX "ECE")
xent_eval_test(skip_nonfinite success ARGS logits_nonfinite.npy targets_i8.npy --skip-nonfinite
               REGEX "289 evaluated, 8 ignored, 3 skipped as non-finite \\(3 logits\\)")
xent_eval_test(allow_masks success ARGS logits_masked.npy targets_i8.npy --allow-masks REGEX "292 evaluated, 8 ignored\n")

# ---- bad input: a clear message and exit code 1, never a crash
xent_eval_test(empty_file error ARGS empty.npy targets_i8.npy REGEX "empty.npy: the file is empty \\(0 bytes\\)")
xent_eval_test(not_npy error ARGS not_npy.npy targets_i8.npy REGEX "not_npy.npy: not a .npy file")
xent_eval_test(truncated_header error ARGS truncated_header.npy targets_i8.npy REGEX "truncated_header.npy: truncated in the .npy header")
xent_eval_test(truncated_data error ARGS truncated_data.npy targets_i8.npy
               REGEX "truncated_data.npy: truncated: shape \\(300, 7\\) needs 8400 bytes of data, but the file holds 8300")
xent_eval_test(trailing_bytes error ARGS trailing.npy targets_i8.npy REGEX "trailing.npy: 8 bytes follow the 8400 bytes of data")
xent_eval_test(malformed_header error ARGS bad_header.npy targets_i8.npy REGEX "bad_header.npy: malformed .npy header \\(expected ',' or '\\)'")
xent_eval_test(malformed_bool error ARGS bad_bool.npy targets_i8.npy REGEX "malformed .npy header \\(expected True or False")
xent_eval_test(header_without_shape error ARGS no_shape.npy targets_i8.npy REGEX "the header lacks 'shape'")
xent_eval_test(format_version_4 error ARGS version4.npy targets_i8.npy REGEX "format version 4.0 is not supported")
xent_eval_test(logits_float16 error ARGS logits_f2.npy targets_i8.npy
               REGEX "logits must be float32 or float64, but the file holds dtype '<f2'")
xent_eval_test(logits_int32 error ARGS logits_i4.npy targets_i8.npy REGEX "logits must be float32 or float64, but the file holds dtype '<i4'")
xent_eval_test(logits_big_endian error ARGS logits_big_endian.npy targets_i8.npy REGEX "logits are big-endian \\('>f4'\\)")
xent_eval_test(targets_float error ARGS logits_f4.npy targets_f4.npy REGEX "targets must be int32 or int64, but the file holds dtype '<f4'")
xent_eval_test(targets_unsigned error ARGS logits_f4.npy targets_u8.npy REGEX "targets must be int32 or int64, but the file holds dtype '<u8'")
xent_eval_test(logits_1d error ARGS logits_1d.npy targets_i8.npy REGEX "logits must have shape \\(N, C\\), but the file holds shape \\(2100,\\)")
xent_eval_test(logits_3d error ARGS logits_3d.npy targets_i8.npy REGEX "but the file holds shape \\(300, 7, 1\\)")
xent_eval_test(logits_fortran_order error ARGS logits_fortran.npy targets_i8.npy REGEX "logits must be in C order")
xent_eval_test(targets_2d error ARGS logits_f4.npy targets_2d.npy REGEX "targets must have shape \\(N,\\), but the file holds shape \\(300, 1\\)")
xent_eval_test(n_mismatch error ARGS logits_f4.npy targets_short.npy REGEX "targets_short.npy: 299 targets for 300 samples of logits")
xent_eval_test(target_too_large error ARGS logits_f4.npy targets_range.npy
               REGEX "targets_range.npy: target\\[123\\] = 7 is outside \\[0, 7\\) and is not the ignore index \\(-100\\)")
xent_eval_test(target_negative error ARGS logits_f4.npy targets_negative.npy REGEX "target\\[45\\] = -5 is outside \\[0, 7\\)")
xent_eval_test(target_out_of_range_threads error ARGS logits_f4.npy targets_range.npy --chunk-mb 0.0001 --threads 4 REGEX "target\\[123\\] = 7")
xent_eval_test(nonfinite_logits error ARGS logits_nonfinite.npy targets_i8.npy
               REGEX "3 non-finite logits \\(NaN or \\+-inf\\) in 3 of 300 samples \\(the first is sample 17\\).*--skip-nonfinite")
xent_eval_test(masked_logits_refused error ARGS logits_masked.npy targets_i8.npy REGEX "the first is sample 0\\).*--allow-masks")
xent_eval_test(no_samples error ARGS logits_no_samples.npy targets_no_samples.npy REGEX "the logits hold no sample \\(shape \\(0, 7\\)\\)")
xent_eval_test(no_classes error ARGS logits_no_classes.npy targets_i8.npy REGEX "the logits hold no class")
xent_eval_test(all_ignored error ARGS logits_f4.npy targets_all_ignored.npy REGEX "no sample left to evaluate \\(300 ignored")
# The command-line parser's own errors.
xent_eval_test(missing_file usage ARGS does_not_exist.npy targets_i8.npy REGEX "does_not_exist.npy")
xent_eval_test(bad_option_value usage ARGS logits_f4.npy targets_i8.npy --bins 0 REGEX "--bins")
xent_eval_test(temperature_and_fit usage ARGS logits_f4.npy targets_i8.npy --temperature 2 --fit-temperature REGEX "excludes")

# ---- robustness: no signal kills it, no report is lost, every message reads well
xent_eval_test(top_k_zero usage ARGS logits_f4.npy targets_i8.npy --top-k 0 REGEX "^--top-k: must be ≥ 1, but got 0\n")
xent_eval_test(chunk_mb_zero usage ARGS logits_f4.npy targets_i8.npy --chunk-mb 0 REGEX "^--chunk-mb: must be a finite number > 0, but got 0\n")
xent_eval_test(temperature_infinite usage ARGS logits_f4.npy targets_i8.npy --temperature inf
               REGEX "^--temperature: must be a finite number > 0, but got inf\n")
# 1 / 1e-40 overflows float32, not float64: there the ranks (both accuracies) are those at T = 1.
xent_eval_test(temperature_overflows_float32 error ARGS logits_f4.npy targets_i8.npy --temperature 1e-40
               REGEX "--temperature 1e-40 is too small for the float32 logits of .*logits_f4.npy: 1 / T = 1e\\+40 overflows float32 \\(T must be at least 2.93874e-39\\)")
xent_eval_test(temperature_overflows_float64 error ARGS logits_f8.npy targets_i4.npy --temperature 1e-310
               REGEX "too small for the float64 logits .*: 1 / T = inf overflows float64 \\(T must be at least 5.56268e-309\\)")
xent_eval_test(temperature_tiny_float64 success ARGS logits_f8.npy targets_i4.npy --temperature 1e-40 --json
               COMPARE 1e-15 KEYS samples ignored accuracy top_k_accuracy)
xent_eval_test(descr_escaped error ARGS logits_escape.npy targets_i8.npy
               REGEX "but the file holds dtype '\\\\x1b\\[2J\\\\x1b\\[31m<f4'\n")
xent_eval_test(svg_names_input error ARGS logits_svg_target.npy targets_i8.npy --svg logits_svg_target.npy
               REGEX "--svg .*logits_svg_target.npy names the logits file .*; the diagram would overwrite an input")
xent_eval_test(svg_no_directory error ARGS logits_f4.npy targets_i8.npy --svg no_such_dir/reliability.svg
               REGEX "reliability.svg: cannot write the reliability diagram \\(there is no directory .*no_such_dir\\)")
# Linux only: its devices (/dev/zero, /dev/full), FIFOs, and xent_eval_inputs run (ptrace, /proc, rusage).
if(CMAKE_SYSTEM_NAME STREQUAL "Linux")
  xent_eval_test(dev_zero error ARGS /dev/zero targets_i8.npy REGEX "^xent-eval: error: /dev/zero: not a regular file but a character device")
  # Not a regular file: written in place (never renamed over); the report still comes out.
  xent_eval_test(svg_dev_full error ARGS logits_f4.npy targets_i8.npy --svg /dev/full
                 REGEX "^xent-eval: error: /dev/full: cannot write the reliability diagram \\(No space left on device\\)" OUT_REGEX "ECE")
  xent_eval_test(json_to_dev_full error ARGS logits_f4.npy targets_i8.npy --json STDOUT /dev/full
                 REGEX "^xent-eval: error: cannot write the report to standard output \\(No space left on device\\)\n$")
  xent_eval_test(text_to_dev_full error ARGS logits_f4.npy targets_i8.npy STDOUT /dev/full
                 REGEX "^xent-eval: error: cannot write the report to standard output \\(No space left on device\\)\n$")
  xent_eval_test(help_to_dev_full error ARGS --help STDOUT /dev/full REGEX "cannot write to standard output \\(No space left on device\\)")
  xent_eval_test(fifo error ARGS fifo.npy targets_i8.npy REGEX "fifo.npy: not a regular file but a FIFO \\(named pipe\\)")
  xent_eval_test(stdout_closed error WRAP close-stdout ARGS logits_f4.npy targets_i8.npy
                 REGEX "^xent-eval: error: cannot write the report to standard output \\(Bad file descriptor\\)\n$")
  # A disk full after 4 KiB: the 8 KB diagram fails, and neither it nor its temporary file remains.
  xent_eval_test(svg_disk_full error WRAP fsize=4096 ARGS logits_f4.npy targets_i8.npy --svg disk_full.svg ABSENT disk_full.svg
                 REGEX "disk_full.svg: cannot write the reliability diagram \\(File too large\\)" OUT_REGEX "ECE")
  # The file shrinks to 4096 bytes after xent-eval checked its size: mapped, the pages past the new end
  # raise SIGBUS in the workers; read, the read comes up short; either way the same message.
  set(truncated_logits "truncated while being read: it had 8528 bytes when opened and has 4096 now \\(shape \\(300, 7\\) needs 8400 bytes of data\\)")
  xent_eval_test(truncated_while_mapped error WRAP truncate=truncate_mapped.npy:4096
                 ARGS truncate_mapped.npy targets_i8.npy --threads 2 --chunk-mb 0.001 REGEX "truncate_mapped.npy: ${truncated_logits}")
  xent_eval_test(truncated_while_read error WRAP truncate=truncate_read.npy:4096
                 ARGS truncate_read.npy targets_i8.npy --no-mmap REGEX "truncate_read.npy: ${truncated_logits}")
  # Within the last page: no SIGBUS, the 28 lost bytes read as zeros; the size check after the chunk finds it.
  xent_eval_test(truncated_in_last_page error WRAP truncate=truncate_last_page.npy:8500 ARGS truncate_last_page.npy targets_i8.npy
                 REGEX "truncate_last_page.npy: truncated while being read: it had 8528 bytes when opened and has 8500 now")
  xent_eval_test(truncated_targets error WRAP truncate=truncate_targets.npy:1000 ARGS logits_f4.npy truncate_targets.npy
                 REGEX "truncate_targets.npy: truncated while being read: it had 2528 bytes when opened and has 1000 now")
  # Memory: 64 MiB of logits, two workers, 1 MB chunks: a few chunks resident, not the file.
  xent_eval_test(memory_bounded_two_threads success WRAP max-rss-mb=48
                 ARGS logits_big.npy targets_big.npy --threads 2 --chunk-mb 1 --json --no-progress REGEX "\"samples\": 2048,")
endif()
