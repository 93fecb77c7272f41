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
# xent-eval's float16 and bfloat16 widening against Eigen's conversion, on every value.
add_test(NAME cli.widen_exhaustive COMMAND xent_eval_inputs widen-check)
set_tests_properties(cli.widen_exhaustive PROPERTIES LABELS cli)
set_tests_properties(cli.make_inputs PROPERTIES FIXTURES_SETUP xent_eval_dir)
set_tests_properties(cli.write_inputs PROPERTIES FIXTURES_REQUIRED xent_eval_dir FIXTURES_SETUP xent_eval_inputs)
# --binary's inputs and their torch / scikit-learn / numpy figures, committed by
# tests/reference/gen_calibration_reference.py --binary-npy tests/reference/binary_eval.
add_test(NAME cli.copy_binary_inputs COMMAND ${CMAKE_COMMAND} -E copy_directory ${PROJECT_SOURCE_DIR}/tests/reference/binary_eval ${cli_dir})
set_tests_properties(cli.copy_binary_inputs PROPERTIES FIXTURES_REQUIRED xent_eval_dir FIXTURES_SETUP xent_eval_inputs)

# xent_eval_test(NAME EXPECT ARGS <args...> [REGEX r] [OUT_REGEX r] [STDOUT file] [WRAP <conditions...>]
#                [ABSENT <files...>] [COMPARE tolerance [KEYS k...] [EXPECTED file]] [SAME written expected])
# File names in ARGS and ABSENT, and the FILE of a WRAP truncate=FILE:BYTES, are relative to
# ${cli_dir}. WRAP runs xent-eval through `xent_eval_inputs run <conditions> --` (Linux). COMPARE
# holds the JSON report to EXPECTED (default expected.txt, the library's report of the float32 logits).
# SAME: after the run, the file xent-eval wrote must hold the bytes of the expected one (both in ${cli_dir}).
function(xent_eval_test name expect)
  cmake_parse_arguments(PARSE_ARGV 2 T "" "REGEX;OUT_REGEX;STDOUT;COMPARE;EXPECTED" "ARGS;KEYS;WRAP;ABSENT;SAME")
  if(NOT DEFINED T_EXPECTED)
    set(T_EXPECTED expected.txt)
  endif()
  set(args "")
  foreach(a IN LISTS T_ARGS)
    if(a MATCHES "\\.(npy|svg|safetensors|raw)$")
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
  if(DEFINED T_SAME)
    list(GET T_SAME 0 same_written)
    list(GET T_SAME 1 same_expected)
    list(APPEND defs "-DSAME_FILES=${cli_dir}/${same_written}|${cli_dir}/${same_expected}")
  endif()
  if(DEFINED T_COMPARE)
    list(APPEND defs -DCOMPARE=$<TARGET_FILE:xent_eval_inputs> -DEXPECTED=${cli_dir}/${T_EXPECTED} -DTOLERANCE=${T_COMPARE} "-DKEYS=${keys}")
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
# Calibration breadth: the RMS (L2) error always; --classwise adds the classwise ECE and the Brier
# decomposition (null in the JSON without it); the fit splits the NLL.
set(classwise_keys rmsce classwise_ece brier_reliability brier_resolution brier_uncertainty brier_within_bin)
xent_eval_test(classwise_json success ARGS logits_f4.npy targets_i8.npy --json --classwise COMPARE 1e-15 KEYS ${classwise_keys})
xent_eval_test(classwise_chunked_threads success ARGS logits_f4.npy targets_i8.npy --json --classwise --chunk-mb 0.0001 --threads 3
               COMPARE 1e-12 KEYS ${classwise_keys})
xent_eval_test(classwise_off_is_null success ARGS logits_f4.npy targets_i8.npy --json
               OUT_REGEX "rmsce.: [0-9].*classwise_ece.: null,.*brier_within_bin.: null,")
xent_eval_test(classwise_text success ARGS logits_f4.npy targets_i8.npy --classwise
               OUT_REGEX "RMS calib. error +[0-9.]+  \\(L2 norm.*classwise ECE +[0-9.]+ .*Brier decomp. +reliability [0-9.]+ - resolution [0-9.]+ \\+ uncertainty [0-9.]+\n +\\+ within-bin -?[0-9.]+")
xent_eval_test(nll_split success ARGS logits_f4.npy targets_i8.npy --fit-temperature --json
               COMPARE 1e-9 KEYS nll_calibration nll_refinement)
xent_eval_test(nll_split_text success ARGS logits_f4.npy targets_i8.npy --fit-temperature
               OUT_REGEX "NLL = calibration [0-9.]+ \\+ refinement [0-9.]+")
# Equal-mass bins: the library's quantile report (expected_quantile*.txt); chunks and threads merge
# the fine histograms, the fit's after-pass keeps the mode.
xent_eval_test(bins_mode_quantile success ARGS logits_f4.npy targets_i8.npy --json --bins-mode quantile
               COMPARE 1e-15 KEYS samples ece mce rmsce nll EXPECTED expected_quantile.txt)
xent_eval_test(bins_mode_quantile_chunked_threads success ARGS logits_f4.npy targets_i8.npy --json --bins-mode quantile --chunk-mb 0.0001
               --threads 3 COMPARE 1e-12 KEYS samples ece mce rmsce nll EXPECTED expected_quantile.txt)
xent_eval_test(bins_mode_quantile_weights success ARGS logits_f4.npy targets_i8.npy --json --bins-mode quantile --weights weights_f4.npy
               --chunk-mb 0.0001 --threads 2 COMPARE 1e-12 KEYS samples ece mce rmsce nll EXPECTED expected_quantile_weights.txt)
xent_eval_test(bins_mode_quantile_fit success ARGS logits_f4.npy targets_i8.npy --json --bins-mode quantile --fit-temperature
               COMPARE 1e-9 KEYS ece ece_after EXPECTED expected_quantile.txt)
xent_eval_test(bins_mode_quantile_text success ARGS logits_f4.npy targets_i8.npy --bins-mode quantile --svg quantile.svg
               OUT_REGEX "ECE +[0-9.]+  \\(15 equal-mass bins")
xent_eval_test(bins_mode_json_names_it success ARGS logits_f4.npy targets_i8.npy --json --bins-mode quantile OUT_REGEX "\"bins_mode\": \"quantile\"")
xent_eval_test(bins_mode_unknown usage ARGS logits_f4.npy targets_i8.npy --bins-mode adaptive REGEX "bins-mode")
# --binary: sigmoid models against the generator's torch / scikit-learn figures (not the library's).
set(binary_keys samples ignored weight bce bce_stderr accuracy brier mean_probability base_rate ece mce rmsce)
xent_eval_test(binary_logits success ARGS binary_logits_x.npy binary_logits_y.npy --binary --bins 10 --json
               COMPARE 1e-13 KEYS ${binary_keys} EXPECTED binary_logits_expected.txt)
xent_eval_test(binary_chunked success ARGS binary_logits_x.npy binary_logits_y.npy --binary --bins 10 --json --chunk-mb 0.0001
               COMPARE 1e-13 KEYS ${binary_keys} EXPECTED binary_logits_expected.txt)
xent_eval_test(binary_weighted success ARGS binary_weighted_x.npy binary_weighted_y.npy --binary --bins 8 --threshold 0.3
               --weights binary_weighted_w.npy --json --chunk-mb 0.0003 COMPARE 1e-13 KEYS ${binary_keys} EXPECTED binary_weighted_expected.txt)
xent_eval_test(binary_probabilities success ARGS binary_probabilities_x.npy binary_probabilities_y.npy --binary --probabilities --bins 12
               --json COMPARE 1e-13 KEYS ${binary_keys} EXPECTED binary_probabilities_expected.txt)
xent_eval_test(multilabel success ARGS multilabel_l4_x.npy multilabel_l4_y.npy --binary --bins 10 --json --chunk-mb 0.0002
               COMPARE 1e-13 KEYS ${binary_keys} EXPECTED multilabel_l4_expected.txt)
xent_eval_test(binary_text success ARGS multilabel_l4_x.npy multilabel_l4_y.npy --binary --bins 10 --svg binary.svg
               OUT_REGEX "4 labels.*480 evaluated.*BCE +0\\.502351 .*accuracy +0\\.7583 .*ECE +0\\.054918  \\(10 bins of p")
xent_eval_test(binary_shape_mismatch error ARGS binary_logits_x.npy multilabel_l4_y.npy --binary REGEX "same shape")
xent_eval_test(binary_class_targets error ARGS binary_logits_x.npy binary_logits_y.npy --binary --probabilities
               REGEX "probability\\[[0-9]+\\] = .* is outside \\[0, 1\\]")
xent_eval_test(binary_fit_refused error ARGS binary_logits_x.npy binary_logits_y.npy --binary --fit-temperature
               REGEX "--fit-temperature is not available with --binary")
xent_eval_test(binary_quantile_refused error ARGS binary_logits_x.npy binary_logits_y.npy --binary --bins-mode quantile REGEX "not available with --binary")
xent_eval_test(binary_two_d_logits_for_class_targets error ARGS logits_f4.npy targets_i8.npy --binary REGEX "same shape")
xent_eval_test(binary_bad_target error ARGS binary_logits_x.npy binary_bad_target_y.npy --binary
               REGEX "target\\[17\\] = 2, but with --binary every target must be 0, 1 or the ignore index \\(-100\\)")
xent_eval_test(binary_nan_refused error ARGS binary_nan_x.npy binary_logits_y.npy --binary REGEX "1 non-finite logits .*--skip-nonfinite")
xent_eval_test(binary_nan_skipped success ARGS binary_nan_x.npy binary_logits_y.npy --binary --skip-nonfinite
               REGEX "399 evaluated, 0 ignored, 1 skipped as non-finite")
xent_eval_test(threshold_needs_binary usage ARGS binary_logits_x.npy binary_logits_y.npy --threshold 0.3 REGEX "requires --binary")
xent_eval_test(probabilities_needs_binary usage ARGS binary_logits_x.npy binary_logits_y.npy --probabilities REGEX "requires --binary")
xent_eval_test(skip_nonfinite success ARGS logits_nonfinite.npy targets_i8.npy --skip-nonfinite
               REGEX "289 evaluated, 8 ignored, 3 skipped as non-finite \\(3 logits\\)")
xent_eval_test(allow_masks success ARGS logits_masked.npy targets_i8.npy --allow-masks REGEX "292 evaluated, 8 ignored\n")

# ---- --weights, --sequence-length, --sequence-lengths: the library's weighted, per-sequence report
# (expected_weights.txt: weights and sequences of 10; expected_lengths.txt: weights and ragged
# lengths; expected_sequences.txt: no weights, sequences of 20). Chunks of 3 samples cut sequences.
set(weight_keys samples ignored weight nll nll_stderr perplexity accuracy top_k_accuracy brier ece mce rmsce
    sequences empty_sequences mean_perplexity median_perplexity max_perplexity min_perplexity worst_sequence)
xent_eval_test(weights_json success ARGS logits_f4.npy targets_i8.npy --weights weights_f4.npy --sequence-length 10 --json
               COMPARE 1e-15 KEYS ${weight_keys} EXPECTED expected_weights.txt)
xent_eval_test(weights_chunked_threads success ARGS logits_f4.npy targets_i8.npy --weights weights_f4.npy --sequence-length 10 --json
               --chunk-mb 0.0001 --threads 3 COMPARE 1e-12 KEYS ${weight_keys} EXPECTED expected_weights.txt)
xent_eval_test(weights_classwise success ARGS logits_f4.npy targets_i8.npy --weights weights_f4.npy --sequence-length 10 --json --classwise
               --chunk-mb 0.0001 --threads 3 COMPARE 1e-12 KEYS ${weight_keys} classwise_ece brier_reliability brier_within_bin
               EXPECTED expected_weights.txt)
xent_eval_test(weights_read_path_float64 success ARGS logits_f4.npy targets_i8.npy --weights weights_f8.npy --sequence-length 10 --json
               --chunk-mb 0.0001 --no-mmap COMPARE 1e-12 KEYS ${weight_keys} EXPECTED expected_weights.txt)
xent_eval_test(sequence_lengths_chunked success ARGS logits_f4.npy targets_i8.npy --weights weights_f4.npy --sequence-lengths lengths_i8.npy
               --json --chunk-mb 0.0001 --threads 2 COMPARE 1e-12 KEYS ${weight_keys} EXPECTED expected_lengths.txt)
xent_eval_test(sequence_lengths_int32 success ARGS logits_f4.npy targets_i8.npy --weights weights_f4.npy --sequence-lengths lengths_i4.npy
               --json COMPARE 1e-15 KEYS ${weight_keys} EXPECTED expected_lengths.txt)
xent_eval_test(sequences_unweighted success ARGS logits_f4.npy targets_i8.npy --sequence-length 20 --json --chunk-mb 0.0001 --threads 3
               COMPARE 1e-12 KEYS ${weight_keys} EXPECTED expected_sequences.txt)
# Weights of 1 are the unweighted report (expected.txt), to the last digit.
xent_eval_test(weights_ones success ARGS logits_f4.npy targets_i8.npy --weights weights_ones.npy --json --characters 1000 --bytes 2000
               COMPARE 0 KEYS ${report_keys})
xent_eval_test(weights_text success ARGS logits_f4.npy targets_i8.npy --weights weights_f4.npy --sequence-length 10
               REGEX "  weights +[^\n]*weights_f4.npy  float32 \\[300\\]  \\(total weight 354.4931\\)\n.*  sequences +30 evaluated of 10 tokens\n  per-sequence PPL  mean 4.3908   median 3.7953   best 1.6734\n +worst 18.3445 \\(sequence 3\\)   token-pooled 3.8782\n")
# With --weights the reliability table has each bin's weight beside its count (numpy over the same
# files: bin (0.200, 0.267] 1 sample of weight 0.8452, (0.933, 1.000] 60 of 81.9211; total 354.4931);
# without, the columns are as before.
xent_eval_test(weights_text_bins success ARGS logits_f4.npy targets_i8.npy --weights weights_f4.npy
               REGEX "reliability +confidence bin +count +weight +confidence +accuracy +gap\n +\\[0\\.000, 0\\.067\\] +0 +0\\.0000 +- +- +-\n.*\\(0\\.200, 0\\.267\\] +1 +0\\.8452 +0\\.2492 +0\\.0000 +-0\\.2492\n.*\\(0\\.933, 1\\.000\\] +60 +81\\.9211 +0\\.9700 +0\\.8748 +-0\\.0952\n")
xent_eval_test(text_bins_unweighted success ARGS logits_f4.npy targets_i8.npy
               REGEX "reliability +confidence bin +count +confidence +accuracy +gap\n.*\\(0\\.200, 0\\.267\\] +1 +0\\.2492 +0\\.0000 +-0\\.2492\n")
xent_eval_test(weights_json_fields success ARGS logits_f4.npy targets_i8.npy --weights weights_f4.npy --sequence-lengths lengths_i8.npy --json
               REGEX "\"weights\": {\"path\": \"[^\"]*weights_f4.npy\", \"format\": \"npy\", \"dtype\": \"float32\", \"shape\": \\[300\\]}.*\"per_sequence\": {\"sequence_lengths\": {\"path\": \"[^\"]*lengths_i8.npy\"")
# bad: weights and sequences
xent_eval_test(weights_negative error ARGS logits_f4.npy targets_i8.npy --weights weights_negative.npy --chunk-mb 0.0001 --threads 2
               REGEX "weights_negative.npy: weights\\[17\\] = -1, but every weight must be finite and >= 0")
xent_eval_test(weights_nan error ARGS logits_f4.npy targets_i8.npy --weights weights_nan.npy
               REGEX "weights_nan.npy: weights\\[250\\] = nan, but every weight must be finite and >= 0")
xent_eval_test(weights_short error ARGS logits_f4.npy targets_i8.npy --weights weights_short.npy
               REGEX "weights_short.npy: 299 weights for 300 samples of logits in [^\n]*logits_f4.npy; both must have the same N")
xent_eval_test(weights_integer error ARGS logits_f4.npy targets_i8.npy --weights weights_i8.npy
               REGEX "weights_i8.npy: weights must be float32 or float64, but the file holds dtype '<i8'")
# --weights with --fit-temperature: the weighted mean NLL minimised (the library's weighted fit).
xent_eval_test(weights_fit_temperature success ARGS logits_f4.npy targets_i8.npy --weights weights_f4.npy --fit-temperature --json
               COMPARE 1e-9 KEYS fitted_temperature ece_after nll_calibration nll_refinement EXPECTED expected_weights_fit.txt)
xent_eval_test(weights_fit_temperature_chunked success ARGS logits_f4.npy targets_i8.npy --weights weights_f4.npy --fit-temperature --json
               --chunk-mb 0.001 --threads 3 COMPARE 1e-6 KEYS fitted_temperature ece_after nll_calibration nll_refinement
               EXPECTED expected_weights_fit.txt)
xent_eval_test(sequence_length_not_dividing error ARGS logits_f4.npy targets_i8.npy --sequence-length 7
               REGEX "--sequence-length 7 must divide the 300 samples of [^\n]*logits_f4.npy into whole sequences \\(6 left over\\)")
xent_eval_test(sequence_length_zero usage ARGS logits_f4.npy targets_i8.npy --sequence-length 0 REGEX "must be ≥ 1, but got 0")
xent_eval_test(sequence_lengths_sum error ARGS logits_f4.npy targets_i8.npy --sequence-lengths lengths_short.npy
               REGEX "lengths_short.npy: the sequence lengths must add up to the 300 samples of the logits, but they add up to 299")
xent_eval_test(sequence_lengths_zero error ARGS logits_f4.npy targets_i8.npy --sequence-lengths lengths_zero.npy
               REGEX "lengths_zero.npy: sequence length \\[2\\] = 0, but every length must be at least 1")
xent_eval_test(sequence_lengths_of_floats error ARGS logits_f4.npy targets_i8.npy --sequence-lengths weights_f4.npy
               REGEX "weights_f4.npy: sequence lengths must be int32 or int64, but the file holds dtype '<f4'")
xent_eval_test(sequence_length_and_lengths usage ARGS logits_f4.npy targets_i8.npy --sequence-length 10 --sequence-lengths lengths_i8.npy
               REGEX "excludes")

# ---- float16 and bfloat16 logits: widened to float32 as read, so the report is the library's of the
# widened values (expected_f16.txt, expected_bf16.txt), exactly as from a float32 file holding them.
set(units --characters 1000 --bytes 2000)
xent_eval_test(float16_npy success ARGS logits_f2.npy targets_i8.npy --json ${units} COMPARE 1e-15 KEYS ${report_keys} EXPECTED expected_f16.txt)
xent_eval_test(float16_as_float32 success ARGS logits_f2_widened.npy targets_i8.npy --json ${units}
               COMPARE 1e-15 KEYS ${report_keys} EXPECTED expected_f16.txt)
xent_eval_test(float16_header success ARGS logits_f2.npy targets_i8.npy REGEX "  logits +[^\n]*logits_f2.npy  float16 \\[300, 7\\]\n")
# Widened chunk by chunk, by three workers or through the read() path: only the order of the sums changes.
xent_eval_test(float16_chunked_threads success ARGS logits_f2.npy targets_i8.npy --json --chunk-mb 0.0001 --threads 3 ${units}
               COMPARE 1e-12 KEYS ${report_keys} EXPECTED expected_f16.txt)
xent_eval_test(float16_read_path success ARGS logits_f2.npy targets_i8.npy --json --chunk-mb 0.0001 --no-mmap ${units}
               COMPARE 1e-12 KEYS ${report_keys} EXPECTED expected_f16.txt)
xent_eval_test(float16_fit_temperature success ARGS logits_f2.npy targets_i8.npy --json --fit-temperature --chunk-mb 0.001
               COMPARE 1e-6 KEYS fitted_temperature ece_after EXPECTED expected_f16.txt)
xent_eval_test(float16_whole_file_read_once success ARGS logits_f2.npy targets_i8.npy --json --no-mmap --fit-temperature
               COMPARE 1e-9 KEYS samples nll ece fitted_temperature ece_after EXPECTED expected_f16.txt)
xent_eval_test(bfloat16_npy_uint16 success ARGS logits_bf16_u2.npy targets_i8.npy --dtype bf16 --json ${units}
               COMPARE 1e-15 KEYS ${report_keys} EXPECTED expected_bf16.txt)
xent_eval_test(bfloat16_as_float32 success ARGS logits_bf16_widened.npy targets_i8.npy --json ${units}
               COMPARE 1e-15 KEYS ${report_keys} EXPECTED expected_bf16.txt)
xent_eval_test(bfloat16_header success ARGS logits_bf16_u2.npy targets_i8.npy --dtype bfloat16
               REGEX "  logits +[^\n]*logits_bf16_u2.npy  bfloat16 \\[300, 7\\]\n")
xent_eval_test(bfloat16_raw success ARGS logits_bf16.raw targets_i8.npy --dtype bf16 --shape 300,7 --json ${units} --chunk-mb 0.0001 --threads 2
               COMPARE 1e-12 KEYS ${report_keys} EXPECTED expected_bf16.txt)
xent_eval_test(bfloat16_raw_header success ARGS logits_bf16.raw targets_i8.npy --dtype bf16 --shape 300,7
               REGEX "  logits +[^\n]*logits_bf16.raw  raw  bfloat16 \\[300, 7\\]\n")
xent_eval_test(float32_raw success ARGS logits_f4.raw targets_i8.npy --dtype f32 --shape 300,7 --json ${units}
               COMPARE 1e-15 KEYS ${report_keys})
xent_eval_test(dtype_agrees success ARGS logits_f2.npy targets_i8.npy --dtype float16 --json COMPARE 1e-15 KEYS nll ece EXPECTED expected_f16.txt)
# bad: the element type
xent_eval_test(uint16_without_dtype error ARGS logits_bf16_u2.npy targets_i8.npy
               REGEX "logits_bf16_u2.npy: logits must be float16, float32 or float64, but the file holds dtype '<u2' \\(bfloat16 bits as uint16\\? --dtype bf16 reads them so\\)")
xent_eval_test(bfloat16_dtype_on_float32 error ARGS logits_f4.npy targets_i8.npy --dtype bf16
               REGEX "logits_f4.npy: --dtype bfloat16 reads bfloat16 bits from a .npy of uint16 \\('<u2'\\), but the file holds dtype '<f4'; leave --dtype out")
xent_eval_test(dtype_disagrees error ARGS logits_f4.npy targets_i8.npy --dtype f64
               REGEX "logits_f4.npy: --dtype float64 must agree with the file, but the file holds float32 \\('<f4'\\)")
# bad: raw files
xent_eval_test(raw_size_mismatch error ARGS logits_short.raw targets_i8.npy --dtype bf16 --shape 300,7
               REGEX "logits_short.raw: --dtype bfloat16 --shape 300,7 needs a raw file of 4200 bytes \\(the logits alone: C order, little-endian, no header\\), but the file has 4198")
xent_eval_test(raw_shape_on_npy error ARGS logits_f4.npy targets_i8.npy --dtype f32 --shape 300,7
               REGEX "logits_f4.npy: --shape is for raw files, but this is a .npy file, whose header gives the shape")
xent_eval_test(raw_without_dtype usage ARGS logits_bf16.raw targets_i8.npy --shape 300,7 REGEX "--shape requires --dtype")
xent_eval_test(raw_shape_one_number usage ARGS logits_bf16.raw targets_i8.npy --dtype bf16 --shape 2100 REGEX "--shape")
xent_eval_test(dtype_unknown usage ARGS logits_f4.npy targets_i8.npy --dtype f8 REGEX "--dtype")

# ---- .safetensors (header parsed with nlohmann-json, when found at configure time)
get_property(xent_eval_safetensors GLOBAL PROPERTY XENT_EVAL_SAFETENSORS)
if(xent_eval_safetensors)
  # One 2-D float tensor, targets from a .npy.
  xent_eval_test(safetensors_float32 success ARGS st_f32.safetensors targets_i8.npy --json ${units} COMPARE 1e-15 KEYS ${report_keys})
  # Logits and targets in one file (and __metadata__): each found as the only tensor that suits it.
  xent_eval_test(safetensors_float16_one_file success ARGS st_f16.safetensors --json ${units}
                 COMPARE 1e-15 KEYS ${report_keys} EXPECTED expected_f16.txt)
  xent_eval_test(safetensors_float16_chunked success ARGS st_f16.safetensors --json --chunk-mb 0.0001 --threads 3 ${units}
                 COMPARE 1e-12 KEYS ${report_keys} EXPECTED expected_f16.txt)
  # Three 2-D float tensors and two 1-D integer ones: the keys choose.
  xent_eval_test(safetensors_bfloat16_keys success ARGS st_bf16_keys.safetensors --logits-key model.logits --targets-key labels --json ${units}
                 COMPARE 1e-15 KEYS ${report_keys} EXPECTED expected_bf16.txt)
  xent_eval_test(safetensors_int32_targets_key success ARGS st_bf16_keys.safetensors --logits-key model.logits --targets-key label_ids --json
                 --fit-temperature COMPARE 1e-9 KEYS samples nll ece fitted_temperature ece_after EXPECTED expected_bf16.txt)
  xent_eval_test(safetensors_header success ARGS st_bf16_keys.safetensors --logits-key model.logits --targets-key labels
                 REGEX "  logits +[^\n]*st_bf16_keys.safetensors  tensor \"model.logits\"  bfloat16 \\[300, 7\\]\n  targets +[^\n]*st_bf16_keys.safetensors  tensor \"labels\"  int64 \\[300\\]\n")
  xent_eval_test(safetensors_json_input success ARGS st_bf16_keys.safetensors --logits-key model.logits --targets-key labels --json
                 REGEX "\"logits\": {\"path\": \"[^\"]*st_bf16_keys.safetensors\", \"format\": \"safetensors\", \"tensor\": \"model.logits\", \"dtype\": \"bfloat16\", \"shape\": \\[300, 7\\]}")
  # Logits at an odd offset cannot be mapped as float16: read instead, same report.
  xent_eval_test(safetensors_misaligned_read success ARGS st_misaligned.safetensors --json ${units} --threads 2
                 COMPARE 1e-15 KEYS ${report_keys} EXPECTED expected_f16.txt)
  # bad: the file
  xent_eval_test(safetensors_too_short error ARGS st_short.safetensors targets_i8.npy
                 REGEX "st_short.safetensors: truncated: a .safetensors file must start with an 8-byte header length, but the file has 5 bytes")
  xent_eval_test(safetensors_header_beyond_file error ARGS st_header_beyond.safetensors targets_i8.npy
                 REGEX "st_header_beyond.safetensors: the .safetensors header length must fit in the file \\(74 bytes after the 8 bytes of the length\\), but got 1000000")
  xent_eval_test(safetensors_header_too_long error ARGS st_header_huge.safetensors targets_i8.npy
                 REGEX "st_header_huge.safetensors: the .safetensors header length must be at most 100000000 bytes \\(the format's limit\\), but got 1099511627776")
  xent_eval_test(safetensors_malformed_json error ARGS st_bad_json.safetensors targets_i8.npy
                 REGEX "st_bad_json.safetensors: the .safetensors header must be JSON, but got a parse error at line 1, column [0-9]+: syntax error while parsing object key")
  # JSON allows numbers beyond a double; nlohmann-json refuses them with an error of its own kind.
  xent_eval_test(safetensors_number_overflow error ARGS st_number_overflow.safetensors targets_i8.npy
                 REGEX "st_number_overflow.safetensors: the .safetensors header must be JSON, but got a number overflow parsing '1e999'")
  xent_eval_test(safetensors_not_object error ARGS st_not_object.safetensors targets_i8.npy
                 REGEX "st_not_object.safetensors: the .safetensors header must be a JSON object of tensors, but got array \\[\"logits\",\"F32\"\\]")
  xent_eval_test(safetensors_no_offsets error ARGS st_no_offsets.safetensors targets_i8.npy
                 REGEX "tensor 'logits' must have \"data_offsets\" \\[BEGIN, END\\] with integers 0 <= BEGIN <= END, but got none")
  xent_eval_test(safetensors_negative_shape error ARGS st_bad_shape.safetensors targets_i8.npy
                 REGEX "tensor 'logits' must have a \"shape\" list of non-negative integers, but got array \\[300,-7\\]")
  xent_eval_test(safetensors_offsets_outside error ARGS st_outside.safetensors targets_i8.npy
                 REGEX "st_outside.safetensors: tensor 'logits': its data_offsets must lie within the 8400 bytes of data after the header, but got \\[0, 9000\\]")
  xent_eval_test(safetensors_size_mismatch error ARGS st_size_mismatch.safetensors targets_i8.npy
                 REGEX "tensor 'logits': dtype F16 and shape \\[300, 7\\] need 4200 bytes, but its data_offsets \\[0, 8400\\] hold 8400")
  xent_eval_test(safetensors_overlap error ARGS st_overlap.safetensors targets_i8.npy
                 REGEX "st_overlap.safetensors: tensors must not overlap, but 'logits' \\[0, 8400\\] and 'targets' \\[8000, 10400\\] do")
  xent_eval_test(safetensors_hole error ARGS st_hole.safetensors targets_i8.npy
                 REGEX "st_hole.safetensors: every byte of the data must belong to a tensor, but bytes \\[8400, 8408\\) belong to none")
  xent_eval_test(safetensors_trailing error ARGS st_trailing.safetensors targets_i8.npy
                 REGEX "every byte of the data must belong to a tensor, but the last 16 of its 8416 bytes belong to none")
  xent_eval_test(safetensors_unknown_dtype error ARGS st_unknown_dtype.safetensors targets_i8.npy
                 REGEX "tensor 'logits': the dtype must be one of the format's \\(BOOL, U8, .*, U64\\), but got 'F17'")
  xent_eval_test(safetensors_duplicate_name error ARGS st_duplicate.safetensors targets_i8.npy
                 REGEX "the .safetensors header must name each tensor once, but names 'logits' more than once")
  xent_eval_test(safetensors_bad_metadata error ARGS st_bad_metadata.safetensors targets_i8.npy
                 REGEX "\"__metadata__\" must be an object of strings, but got object {\"epoch\":3}")
  # bad: the choice of tensors
  xent_eval_test(safetensors_ambiguous_logits error ARGS st_bf16_keys.safetensors
                 REGEX "st_bf16_keys.safetensors: 3 tensors could be the logits \\('teacher.logits', 'model.logits', 'embedding'\\); choose one with --logits-key NAME")
  xent_eval_test(safetensors_ambiguous_targets error ARGS st_bf16_keys.safetensors --logits-key model.logits
                 REGEX "2 tensors could be the targets \\('labels', 'label_ids'\\); choose one with --targets-key NAME")
  xent_eval_test(safetensors_no_logits error ARGS st_no_logits.safetensors targets_i8.npy
                 REGEX "the logits must be a 2-D tensor of F16, BF16, F32 or F64, but the file holds 'targets' \\(I64 \\[300\\]\\)")
  xent_eval_test(safetensors_no_targets error ARGS st_f32.safetensors
                 REGEX "st_f32.safetensors: the targets must be a 1-D tensor of I32 or I64, but the file holds 'logits' \\(F32 \\[300, 7\\]\\)")
  xent_eval_test(safetensors_key_missing error ARGS st_bf16_keys.safetensors --logits-key nope
                 REGEX "--logits-key 'nope' must name a tensor of the file, but the file holds 'teacher.logits' \\(F32 \\[300, 7\\]\\), 'model.logits' \\(BF16 \\[300, 7\\]\\), 'embedding' \\(F32 \\[7, 4\\]\\), 'labels' \\(I64 \\[300\\]\\), 'label_ids' \\(I32 \\[300\\]\\)")
  xent_eval_test(safetensors_key_unsuitable error ARGS st_bf16_keys.safetensors --logits-key labels
                 REGEX "the logits must be a 2-D tensor of F16, BF16, F32 or F64, but tensor 'labels' is I64 \\[300\\]")
  xent_eval_test(safetensors_dtype_disagrees error ARGS st_f32.safetensors targets_i8.npy --dtype f16
                 REGEX "--dtype float16 must agree with the file, but tensor 'logits' is F32 \\(float32\\); leave --dtype out")
  xent_eval_test(logits_key_on_npy error ARGS logits_f4.npy targets_i8.npy --logits-key logits
                 REGEX "logits_f4.npy: --logits-key names a tensor of a .safetensors file, but this is a .npy file")
  xent_eval_test(targets_key_on_npy error ARGS st_f32.safetensors targets_i8.npy --targets-key labels
                 REGEX "targets_i8.npy: --targets-key names a tensor of a .safetensors file, but this is a .npy file")
  xent_eval_test(raw_shape_on_safetensors error ARGS st_f32.safetensors targets_i8.npy --dtype f32 --shape 300,7
                 REGEX "--shape is for raw files, but this is a .safetensors file")
else()
  xent_eval_test(safetensors_unsupported error ARGS st_f32.safetensors targets_i8.npy
                 REGEX "st_f32.safetensors: a .safetensors file, but this xent-eval was built without .safetensors support \\(nlohmann-json was not found")
endif()

# ---- bad input: a clear message and exit code 1, never a crash
xent_eval_test(empty_file error ARGS empty.npy targets_i8.npy REGEX "empty.npy: the file is empty \\(0 bytes\\)")
xent_eval_test(not_npy error ARGS not_npy.npy targets_i8.npy
               REGEX "not_npy.npy: not a .npy file \\(.*\\) nor a .safetensors file .*; raw logits need --dtype and --shape")
xent_eval_test(truncated_header error ARGS truncated_header.npy targets_i8.npy REGEX "truncated_header.npy: truncated in the .npy header")
xent_eval_test(truncated_data error ARGS truncated_data.npy targets_i8.npy
               REGEX "truncated_data.npy: truncated: shape \\(300, 7\\) needs 8400 bytes of data, but the file holds 8300")
xent_eval_test(trailing_bytes error ARGS trailing.npy targets_i8.npy REGEX "trailing.npy: 8 bytes follow the 8400 bytes of data")
xent_eval_test(malformed_header error ARGS bad_header.npy targets_i8.npy REGEX "bad_header.npy: malformed .npy header \\(expected ',' or '\\)'")
xent_eval_test(malformed_bool error ARGS bad_bool.npy targets_i8.npy REGEX "malformed .npy header \\(expected True or False")
xent_eval_test(header_without_shape error ARGS no_shape.npy targets_i8.npy REGEX "the header lacks 'shape'")
xent_eval_test(format_version_4 error ARGS version4.npy targets_i8.npy REGEX "format version 4.0 is not supported")
xent_eval_test(logits_complex error ARGS logits_c8.npy targets_i8.npy
               REGEX "logits must be float16, float32 or float64, but the file holds dtype '<c8'")
xent_eval_test(logits_int32 error ARGS logits_i4.npy targets_i8.npy
               REGEX "logits must be float16, float32 or float64, but the file holds dtype '<i4'")
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
xent_eval_test(npy_without_targets error ARGS logits_f4.npy
               REGEX "logits_f4.npy: a .npy file holds the logits alone; give the targets file \\(.npy or .safetensors\\) after it")
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
  # A tensor after a .safetensors header: the same guard, at the tensor's own offset.
  if(xent_eval_safetensors)
    xent_eval_test(truncated_safetensors_while_mapped error WRAP truncate=st_truncate.safetensors:4096
                   ARGS st_truncate.safetensors targets_i8.npy --threads 2 --chunk-mb 0.001
                   REGEX "st_truncate.safetensors: truncated while being read: it had 8488 bytes when opened and has 4096 now \\(shape \\(300, 7\\) needs 8400 bytes of data\\)")
  endif()
  # Memory with float16 logits widened per chunk: 32 MiB in the file, 64 MiB once widened. 32 MB
  # fails both a whole-file widening and a mapping never released (12 MB measured, 18 under ASan).
  xent_eval_test(memory_bounded_float16 success WRAP max-rss-mb=32
                 ARGS logits_big_f2.npy targets_big.npy --threads 2 --chunk-mb 1 --json --no-progress REGEX "\"dtype\": \"float16\", \"shape\": \\[2048, 8192\\]")
  # Memory: 64 MiB of logits, two workers, 1 MB chunks: a few chunks resident, not the file.
  xent_eval_test(memory_bounded_two_threads success WRAP max-rss-mb=48
                 ARGS logits_big.npy targets_big.npy --threads 2 --chunk-mb 1 --json --no-progress REGEX "\"samples\": 2048,")
endif()

# ---- xent-eval compare BASE TEST [TARGETS]: the library's compare_accumulator on the same logits
# (expected_compare*.txt and the per-token .npy written by xent_eval_inputs), however the files are read.
set(compare_keys samples ignored kl kl_stderr kl_median kl_p99 kl_max same_top log_ppl_ratio log_ppl_ratio_stderr delta_p delta_p_rms
    nll_base nll_test)
xent_eval_test(compare_help success ARGS compare --help REGEX "--per-token")
xent_eval_test(compare_in_main_help success ARGS --help REGEX "xent-eval compare BASE TEST")
xent_eval_test(compare_text success ARGS compare logits_f4.npy cmp_test_f4.npy targets_i8.npy
               REGEX "292 compared, 8 ignored\n.*KL\\(base \\|\\| test\\) .*same top token .*delta p \\(target\\) .*ln\\(PPL_test/base\\) ")
xent_eval_test(compare_json_matches_library success ARGS compare logits_f4.npy cmp_test_f4.npy targets_i8.npy --json
               COMPARE 1e-15 KEYS ${compare_keys} EXPECTED expected_compare.txt)
# 100-byte chunks (7 samples of both files), 3 workers, or pread: only the order of the sums changes.
xent_eval_test(compare_chunked_threads success ARGS compare logits_f4.npy cmp_test_f4.npy targets_i8.npy --json --chunk-mb 0.0001 --threads 3
               COMPARE 1e-12 KEYS ${compare_keys} EXPECTED expected_compare.txt)
xent_eval_test(compare_read_path success ARGS compare logits_f4.npy cmp_test_f4.npy targets_i8.npy --json --chunk-mb 0.0001 --no-mmap --threads 2
               COMPARE 1e-12 KEYS ${compare_keys} EXPECTED expected_compare.txt)
# A float64 base (the same values) makes both evaluated as float64: within the float32 budget of the
# library's float32 figures (docs/metrics.md), 16 float epsilons.
xent_eval_test(compare_int32_float64 success ARGS compare logits_f8.npy cmp_test_f4.npy targets_i4.npy --json
               COMPARE 2e-6 KEYS ${compare_keys} EXPECTED expected_compare.txt)
xent_eval_test(compare_float16_test success ARGS compare logits_f4.npy cmp_test_f2.npy targets_i8.npy --json
               COMPARE 1e-15 KEYS ${compare_keys} EXPECTED expected_compare_f16.txt)
xent_eval_test(compare_no_targets success ARGS compare logits_f4.npy cmp_test_f4.npy --json
               COMPARE 1e-15 KEYS samples kl kl_stderr kl_median kl_p99 kl_max same_top EXPECTED expected_compare_notargets.txt)
xent_eval_test(compare_no_targets_text success ARGS compare logits_f4.npy cmp_test_f4.npy REGEX "300 compared, 0 ignored\n.*same top token")
# Every token's figures, byte for byte those of the library, whichever worker wrote them.
xent_eval_test(compare_per_token success ARGS compare logits_f4.npy cmp_test_f4.npy targets_i8.npy --per-token cmp_tokens.npy
               --chunk-mb 0.0001 --threads 3 SAME cmp_tokens.npy expected_compare_tokens.npy)
xent_eval_test(compare_per_token_no_targets success ARGS compare logits_f4.npy cmp_test_f4.npy --per-token cmp_tokens_nt.npy --no-mmap
               SAME cmp_tokens_nt.npy expected_compare_notargets_tokens.npy)
xent_eval_test(compare_svg success ARGS compare logits_f4.npy cmp_test_f4.npy targets_i8.npy --svg compare.svg REGEX "KL")
xent_eval_test(compare_identical success ARGS compare logits_f4.npy logits_f4.npy targets_i8.npy --json
               REGEX "\"kl\": 0,\n.*\"kl_max\": 0,\n  \"same_top\": 1,.*\"log_ppl_ratio\": 0,.*\"delta_p\": 0,")
xent_eval_test(compare_skip_nonfinite success ARGS compare logits_f4.npy cmp_test_nan.npy targets_i8.npy --skip-nonfinite
               REGEX "291 compared, 8 ignored, 1 skipped as non-finite")
# bad: the pair
xent_eval_test(compare_classes_differ error ARGS compare logits_f4.npy cmp_test_c6.npy targets_i8.npy
               REGEX "cmp_test_c6.npy: 6 classes per sample, but [^ ]*logits_f4.npy has 7; base and test must share the vocabulary \\(shapes \\(300, 7\\) and \\(300, 6\\)\\)")
xent_eval_test(compare_samples_differ error ARGS compare logits_f4.npy cmp_test_n299.npy
               REGEX "cmp_test_n299.npy: 299 samples, but [^ ]*logits_f4.npy has 300; base and test must be the logits of the same tokens")
xent_eval_test(compare_targets_mismatch error ARGS compare logits_f4.npy cmp_test_f4.npy targets_short.npy
               REGEX "targets_short.npy: 299 targets for 300 samples of logits in [^ ]*logits_f4.npy; both must have the same N")
xent_eval_test(compare_target_out_of_range error ARGS compare logits_f4.npy cmp_test_f4.npy targets_range.npy --chunk-mb 0.0001 --threads 2
               REGEX "targets_range.npy: target\\[123\\] = 7 is outside \\[0, 7\\) and is not the ignore index \\(-100\\)")
xent_eval_test(compare_nonfinite error ARGS compare logits_f4.npy cmp_test_nan.npy targets_i8.npy --chunk-mb 0.0001 --threads 2
               REGEX "1 of 300 samples have no distribution in [^ ]*logits_f4.npy or [^ ]*cmp_test_nan.npy \\(a NaN or \\+inf logit, or every logit -inf; the first is sample 43\\).*--skip-nonfinite")
xent_eval_test(compare_bad_test_file error ARGS compare logits_f4.npy not_npy.npy
               REGEX "not_npy.npy: not a .npy file")
xent_eval_test(compare_missing_test_file usage ARGS compare logits_f4.npy does_not_exist.npy REGEX "does_not_exist.npy")
xent_eval_test(compare_test_required usage ARGS compare logits_f4.npy REGEX "test is required")
xent_eval_test(compare_all_ignored error ARGS compare logits_f4.npy cmp_test_f4.npy targets_all_ignored.npy REGEX "no sample left to compare \\(300 ignored")
xent_eval_test(compare_svg_names_input error ARGS compare logits_f4.npy cmp_test_f4.npy --svg cmp_test_f4.npy
               REGEX "--svg [^ ]*cmp_test_f4.npy names the test file [^ ]*; the histograms would overwrite an input")
xent_eval_test(compare_per_token_no_directory error ARGS compare logits_f4.npy cmp_test_f4.npy --per-token no_such_dir/tokens.npy
               REGEX "tokens.npy: cannot write the per-token figures \\(there is no directory [^)]*no_such_dir\\)")
if(CMAKE_SYSTEM_NAME STREQUAL "Linux")
  xent_eval_test(compare_json_to_dev_full error ARGS compare logits_f4.npy cmp_test_f4.npy --json STDOUT /dev/full
                 REGEX "^xent-eval: error: cannot write the report to standard output \\(No space left on device\\)\n$")
  # Memory: two mappings of 64 MiB (the same file twice), two workers, 1 MB chunks.
  xent_eval_test(compare_memory_bounded success WRAP max-rss-mb=48
                 ARGS compare logits_big.npy logits_big.npy targets_big.npy --threads 2 --chunk-mb 1 --json --no-progress REGEX "\"samples\": 2048,")
endif()
