# Consumer builds that prove xent's packaging, registered as CTest tests named consumer.*
# (label "consumer"). Include this file from tests/CMakeLists.txt after enable_testing():
#
#   include(${CMAKE_CURRENT_SOURCE_DIR}/consumers/consumers.cmake)
#
# Inputs (optional):
#   XENT_SOURCE_DIR        the xent source tree to package; default ${PROJECT_SOURCE_DIR}
#   XENT_EXPECTED_VERSION  version every consumer must see; default ${xent_VERSION}
#                          (checks are skipped when empty)
#
# Fixture chain (ctest pulls the setup tests in by itself, e.g. with -R consumer.find_package):
#   consumer.clean              wipes <build>/consumers (every run starts from nothing)
#   consumer.install.configure  separate configure of XENT_SOURCE_DIR, tests/examples/bench/tools/docs OFF
#   consumer.install            cmake --install into <build>/consumers/prefix
#   consumer.tarball            cmake -E tar of the source tree, for FetchContent
#   consumer.layout             check_layout.cmake on the prefix
#   consumer.find_package / consumer.pkg_config    use the prefix
#   consumer.find_package_mpi   uses the prefix's mpi component (only when this build has MPI)
#   consumer.cxx20_serial       a -DCMAKE_CXX_STANDARD=20 consumer of xent::xent / xent.pc: stays
#                               C++20, gets no -fopenmp, runs serially
#   consumer.find_package_openmp  the openmp component / xent-openmp.pc: runs on an OpenMP team
#                               (only when this build has OpenMP)
#   consumer.add_subdirectory / consumer.fetch_content  use the source tree / the tarball
include_guard(GLOBAL)

if(NOT DEFINED XENT_SOURCE_DIR)
  set(XENT_SOURCE_DIR "${PROJECT_SOURCE_DIR}")
endif()
if(NOT DEFINED XENT_EXPECTED_VERSION)
  set(XENT_EXPECTED_VERSION "${xent_VERSION}")
endif()

function(_xent_add_consumer_tests here)
  get_filename_component(src "${XENT_SOURCE_DIR}" ABSOLUTE)
  set(work "${CMAKE_CURRENT_BINARY_DIR}/consumers")
  set(prefix "${work}/prefix")
  # Outside ${work} so that it can be written while consumer.clean has just removed ${work}.
  set(tarball "${CMAKE_CURRENT_BINARY_DIR}/xent-consumer-src.tar.gz")
  set(version "${XENT_EXPECTED_VERSION}")

  # Same generator, compiler and Eigen as this build.
  set(gen_args -G "${CMAKE_GENERATOR}")
  set(bt_gen_args --build-generator "${CMAKE_GENERATOR}")
  if(CMAKE_GENERATOR_PLATFORM)
    list(APPEND gen_args -A "${CMAKE_GENERATOR_PLATFORM}")
    list(APPEND bt_gen_args --build-generator-platform "${CMAKE_GENERATOR_PLATFORM}")
  endif()
  if(CMAKE_GENERATOR_TOOLSET)
    list(APPEND gen_args -T "${CMAKE_GENERATOR_TOOLSET}")
    list(APPEND bt_gen_args --build-generator-toolset "${CMAKE_GENERATOR_TOOLSET}")
  endif()
  if(CMAKE_MAKE_PROGRAM)
    list(APPEND bt_gen_args --build-makeprogram "${CMAKE_MAKE_PROGRAM}")
  endif()
  get_property(multi_config GLOBAL PROPERTY GENERATOR_IS_MULTI_CONFIG)
  if(multi_config)
    list(APPEND bt_gen_args --build-config $<CONFIG>)
  endif()
  list(APPEND bt_gen_args --build-noclean)

  set(cache_args "-DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER}")
  if(CMAKE_MAKE_PROGRAM)
    list(APPEND cache_args "-DCMAKE_MAKE_PROGRAM=${CMAKE_MAKE_PROGRAM}")
  endif()
  if(CMAKE_TOOLCHAIN_FILE)
    list(APPEND cache_args "-DCMAKE_TOOLCHAIN_FILE=${CMAKE_TOOLCHAIN_FILE}")
  endif()
  if(Eigen3_DIR)
    list(APPEND cache_args "-DEigen3_DIR=${Eigen3_DIR}")
  endif()

  # What every consumer project gets on top.
  set(consumer_args ${cache_args} "-DXENT_EXPECTED_VERSION=${version}")
  # The separate configure below uses this build's compiler: it finds OpenMP when this one did, and
  # installs the openmp component then.
  if(TARGET xent::openmp)
    set(with_openmp ON)
  else()
    set(with_openmp OFF)
  endif()

  # --- fixtures -------------------------------------------------------------------------------
  add_test(NAME consumer.clean COMMAND "${CMAKE_COMMAND}" -E rm -rf "${work}")
  set_tests_properties(consumer.clean PROPERTIES FIXTURES_SETUP xent_consumers_clean)

  add_test(NAME consumer.install.configure
    COMMAND "${CMAKE_COMMAND}" -S "${src}" -B "${work}/install-build" ${gen_args} ${cache_args}
            -DXENT_BUILD_TESTS=OFF -DXENT_BUILD_EXAMPLES=OFF -DXENT_BUILD_BENCH=OFF -DXENT_BUILD_TOOLS=OFF
            -DXENT_BUILD_DOCS=OFF "-DCMAKE_INSTALL_PREFIX=${prefix}")
  set_tests_properties(consumer.install.configure PROPERTIES
    FIXTURES_REQUIRED xent_consumers_clean
    FIXTURES_SETUP xent_install_configured)

  add_test(NAME consumer.install COMMAND "${CMAKE_COMMAND}" --install "${work}/install-build")
  set_tests_properties(consumer.install PROPERTIES
    FIXTURES_REQUIRED "xent_consumers_clean;xent_install_configured"
    FIXTURES_SETUP xent_installed)

  # A source tarball of what a release would ship (existing entries only), so FetchContent
  # tests uncommitted work without git.
  set(tar_entries "")
  foreach(entry IN ITEMS CMakeLists.txt include cmake LICENSE LICENSE.txt LICENSE.md COPYING)
    if(EXISTS "${src}/${entry}")
      list(APPEND tar_entries "${entry}")
    endif()
  endforeach()
  add_test(NAME consumer.tarball
    COMMAND "${CMAKE_COMMAND}" -E tar czf "${tarball}" ${tar_entries}
    WORKING_DIRECTORY "${src}")
  set_tests_properties(consumer.tarball PROPERTIES
    FIXTURES_REQUIRED xent_consumers_clean
    FIXTURES_SETUP xent_tarball)

  # --- checks ---------------------------------------------------------------------------------
  add_test(NAME consumer.layout
    COMMAND "${CMAKE_COMMAND}" "-DXENT_PREFIX=${prefix}" "-DXENT_SOURCE_DIR=${src}"
            "-DXENT_BUILD_DIR=${work}/install-build" "-DXENT_EXPECTED_VERSION=${version}"
            "-DXENT_EXPECT_OPENMP=${with_openmp}" -P "${here}/check_layout.cmake")
  set_tests_properties(consumer.layout PROPERTIES FIXTURES_REQUIRED "xent_consumers_clean;xent_installed")

  # The layout ports/xent/portfile.cmake relies on, with the portfile's own options (vcpkg itself
  # cannot be installed here).
  add_test(NAME consumer.vcpkg_port
    COMMAND "${CMAKE_COMMAND}" "-DXENT_SOURCE_DIR=${src}" "-DWORK_DIR=${work}/vcpkg-port"
            "-DXENT_EXPECT_OPENMP=${with_openmp}" -P "${here}/check_vcpkg_port.cmake")
  set_tests_properties(consumer.vcpkg_port PROPERTIES FIXTURES_REQUIRED xent_consumers_clean)

  add_test(NAME consumer.find_package
    COMMAND "${CMAKE_CTEST_COMMAND}" --build-and-test "${here}/find_package" "${work}/find_package"
            ${bt_gen_args}
            --build-options ${consumer_args} "-DCMAKE_PREFIX_PATH=${prefix}" "-DXENT_EXPECTED_PREFIX=${prefix}"
            --test-command xent_consumer)
  set_tests_properties(consumer.find_package PROPERTIES FIXTURES_REQUIRED "xent_consumers_clean;xent_installed")

  add_test(NAME consumer.add_subdirectory
    COMMAND "${CMAKE_CTEST_COMMAND}" --build-and-test "${here}/add_subdirectory" "${work}/add_subdirectory"
            ${bt_gen_args}
            --build-options ${consumer_args} "-DXENT_SOURCE_DIR=${src}"
            --test-command xent_consumer)
  set_tests_properties(consumer.add_subdirectory PROPERTIES FIXTURES_REQUIRED xent_consumers_clean)

  add_test(NAME consumer.fetch_content
    COMMAND "${CMAKE_CTEST_COMMAND}" --build-and-test "${here}/fetch_content" "${work}/fetch_content"
            ${bt_gen_args}
            --build-options ${consumer_args} "-DXENT_TARBALL=${tarball}"
            --test-command xent_consumer)
  set_tests_properties(consumer.fetch_content PROPERTIES FIXTURES_REQUIRED "xent_consumers_clean;xent_tarball")

  set(tests consumer.clean consumer.install.configure consumer.install consumer.tarball
            consumer.layout consumer.vcpkg_port consumer.find_package consumer.add_subdirectory consumer.fetch_content)

  find_program(XENT_PKG_CONFIG_EXECUTABLE NAMES pkg-config pkgconf
    DOC "pkg-config used by the consumer.pkg_config, cxx20_serial and find_package_openmp tests")
  mark_as_advanced(XENT_PKG_CONFIG_EXECUTABLE)
  set(pc_args "")
  set(pc_path "${prefix}/share/pkgconfig")
  if(DEFINED ENV{PKG_CONFIG_PATH} AND NOT "$ENV{PKG_CONFIG_PATH}" STREQUAL "")
    string(APPEND pc_path ":$ENV{PKG_CONFIG_PATH}")
  endif()
  if(XENT_PKG_CONFIG_EXECUTABLE AND NOT WIN32)
    set(pc_args "-DPKG_CONFIG_EXECUTABLE=${XENT_PKG_CONFIG_EXECUTABLE}")
  endif()

  # Threads are opt-in: a C++20 consumer of xent::xent alone stays C++20 and serial, and one that
  # asks for the openmp component runs threaded. Each project runs its programs with its own CTest.
  add_test(NAME consumer.cxx20_serial
    COMMAND "${CMAKE_CTEST_COMMAND}" --build-and-test "${here}/cxx20_serial" "${work}/cxx20_serial"
            ${bt_gen_args}
            --build-options ${cache_args} "-DCMAKE_PREFIX_PATH=${prefix}" -DCMAKE_CXX_STANDARD=20 ${pc_args}
            --test-command "${CMAKE_CTEST_COMMAND}" --output-on-failure)
  set_tests_properties(consumer.cxx20_serial PROPERTIES
    FIXTURES_REQUIRED "xent_consumers_clean;xent_installed"
    ENVIRONMENT "PKG_CONFIG_PATH=${pc_path}")
  list(APPEND tests consumer.cxx20_serial)
  if(with_openmp)
    add_test(NAME consumer.find_package_openmp
      COMMAND "${CMAKE_CTEST_COMMAND}" --build-and-test "${here}/find_package_openmp" "${work}/find_package_openmp"
              ${bt_gen_args}
              --build-options ${cache_args} "-DCMAKE_PREFIX_PATH=${prefix}" ${pc_args}
              --test-command "${CMAKE_CTEST_COMMAND}" --output-on-failure)
    set_tests_properties(consumer.find_package_openmp PROPERTIES
      FIXTURES_REQUIRED "xent_consumers_clean;xent_installed"
      ENVIRONMENT "PKG_CONFIG_PATH=${pc_path}")
    list(APPEND tests consumer.find_package_openmp)
  endif()

  # The mpi component, when this build has MPI (the install above then exports xent::mpi): built
  # against the installed package and run on 2 ranks by the consumer project's own test.
  if(TARGET xent::mpi)
    list(JOIN XENT_MPIEXEC_FLAGS "$<SEMICOLON>" mpiexec_flags)
    add_test(NAME consumer.find_package_mpi
      COMMAND "${CMAKE_CTEST_COMMAND}" --build-and-test "${here}/find_package_mpi" "${work}/find_package_mpi"
              ${bt_gen_args}
              --build-options ${cache_args} "-DCMAKE_PREFIX_PATH=${prefix}" "-DXENT_MPIEXEC_FLAGS=${mpiexec_flags}"
              --test-command "${CMAKE_CTEST_COMMAND}" --output-on-failure)
    set_tests_properties(consumer.find_package_mpi PROPERTIES FIXTURES_REQUIRED "xent_consumers_clean;xent_installed")
    list(APPEND tests consumer.find_package_mpi)
  endif()

  if(XENT_PKG_CONFIG_EXECUTABLE AND NOT WIN32)
    add_test(NAME consumer.pkg_config
      COMMAND "${CMAKE_CTEST_COMMAND}" --build-and-test "${here}/pkg_config" "${work}/pkg_config"
              ${bt_gen_args}
              --build-options ${consumer_args} "-DPKG_CONFIG_EXECUTABLE=${XENT_PKG_CONFIG_EXECUTABLE}"
                              "-DXENT_EXPECTED_PREFIX=${prefix}"
              --test-command xent_consumer)
    set_tests_properties(consumer.pkg_config PROPERTIES
      FIXTURES_REQUIRED "xent_consumers_clean;xent_installed"
      ENVIRONMENT "PKG_CONFIG_PATH=${pc_path}")
    list(APPEND tests consumer.pkg_config)
  else()
    message(STATUS "xent: pkg-config not found, consumer.pkg_config is not registered")
  endif()

  set_tests_properties(${tests} PROPERTIES LABELS consumer TIMEOUT 300)
endfunction()

_xent_add_consumer_tests("${CMAKE_CURRENT_LIST_DIR}")
