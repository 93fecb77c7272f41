# Checks the layout of an installed xent. Run by the consumer.layout test:
#   cmake -DXENT_PREFIX=<prefix> [-DXENT_SOURCE_DIR=<src>] [-DXENT_BUILD_DIR=<build>]
#         [-DXENT_EXPECTED_VERSION=<x.y.z>] -P check_layout.cmake
# Header-only and architecture-independent: everything lives in include/ and share/, nothing
# in lib*/ or bin/, and the version file accepts consumers of any pointer size.
cmake_minimum_required(VERSION 3.21)

if(NOT XENT_PREFIX OR NOT IS_DIRECTORY "${XENT_PREFIX}")
  message(FATAL_ERROR "XENT_PREFIX='${XENT_PREFIX}' is not a directory (did consumer.install run?)")
endif()
set(P "${XENT_PREFIX}")
set(errors "")

# Required files.
foreach(f IN ITEMS
    share/cmake/xent/xentConfig.cmake
    share/cmake/xent/xentConfigVersion.cmake
    share/cmake/xent/xentTargets.cmake
    include/xent/xent.hpp
    include/xent/version.hpp
    share/pkgconfig/xent.pc)
  if(NOT EXISTS "${P}/${f}")
    list(APPEND errors "missing ${f}")
  endif()
endforeach()

# Only include/ and share/ at the top; in particular no lib/, lib64/ or bin/ for a header-only
# library (a CMake package or .pc under lib/ would make it look architecture specific).
file(GLOB top RELATIVE "${P}" "${P}/*")
foreach(entry IN LISTS top)
  if(NOT entry MATCHES "^(include|share)$")
    file(GLOB_RECURSE inside RELATIVE "${P}" "${P}/${entry}/*")
    list(APPEND errors "unexpected top-level entry ${entry}/ (files: ${inside})")
  endif()
endforeach()

# include/ holds xent/ only, and only headers.
file(GLOB inc_top RELATIVE "${P}/include" "${P}/include/*")
list(REMOVE_ITEM inc_top xent)
if(inc_top)
  list(APPEND errors "include/ holds more than xent/: ${inc_top}")
endif()
file(GLOB_RECURSE headers RELATIVE "${P}" "${P}/include/*")
foreach(h IN LISTS headers)
  if(NOT h MATCHES "\\.(h|hh|hpp|hxx|ipp|inl|tpp)$")
    list(APPEND errors "non-header file installed: ${h}")
  endif()
endforeach()

# Version file. ARCH_INDEPENDENT is checked by behaviour, not by text: CMake 3.25 still writes the
# CMAKE_SIZEOF_VOID_P test into the file, behind an `if("TRUE") return()`. Evaluate the file as
# find_package would, for 32-bit, 64-bit and unknown consumers.
set(vf "${P}/share/cmake/xent/xentConfigVersion.cmake")
function(_xent_eval_version_file sizeof request out_compatible out_unsuitable out_version)
  set(CMAKE_SIZEOF_VOID_P "${sizeof}")
  set(PACKAGE_FIND_NAME xent)
  set(PACKAGE_FIND_VERSION "${request}")
  string(REPLACE "." ";" parts "${request}.0.0.0")
  list(GET parts 0 PACKAGE_FIND_VERSION_MAJOR)
  list(GET parts 1 PACKAGE_FIND_VERSION_MINOR)
  list(GET parts 2 PACKAGE_FIND_VERSION_PATCH)
  list(GET parts 3 PACKAGE_FIND_VERSION_TWEAK)
  set(PACKAGE_FIND_VERSION_COUNT 3)
  set(PACKAGE_FIND_VERSION_RANGE "")
  set(PACKAGE_VERSION_COMPATIBLE "")
  set(PACKAGE_VERSION_UNSUITABLE "")
  include("${vf}")
  set(${out_compatible} "${PACKAGE_VERSION_COMPATIBLE}" PARENT_SCOPE)
  set(${out_unsuitable} "${PACKAGE_VERSION_UNSUITABLE}" PARENT_SCOPE)
  set(${out_version} "${PACKAGE_VERSION}" PARENT_SCOPE)
endfunction()
if(EXISTS "${vf}")
  set(request "${XENT_EXPECTED_VERSION}")
  if(NOT request)
    set(request 0.0.0)  # only the architecture part is checked then
  endif()
  foreach(sizeof IN ITEMS 4 8 "")
    _xent_eval_version_file("${sizeof}" "${request}" compatible unsuitable pkg_version)
    if(unsuitable)
      list(APPEND errors "xentConfigVersion.cmake rejects a consumer with CMAKE_SIZEOF_VOID_P='${sizeof}' (write it with ARCH_INDEPENDENT)")
    endif()
    if(XENT_EXPECTED_VERSION AND NOT compatible)
      list(APPEND errors "xentConfigVersion.cmake (version '${pkg_version}') rejects a request for ${XENT_EXPECTED_VERSION} (CMAKE_SIZEOF_VOID_P='${sizeof}')")
    endif()
  endforeach()
  if(XENT_EXPECTED_VERSION AND NOT pkg_version STREQUAL XENT_EXPECTED_VERSION)
    list(APPEND errors "xentConfigVersion.cmake declares version ${pkg_version}, expected ${XENT_EXPECTED_VERSION}")
  endif()
  if(XENT_EXPECTED_VERSION MATCHES "^([0-9]+)\\.")
    math(EXPR next_major "${CMAKE_MATCH_1} + 1")
    _xent_eval_version_file(8 "${next_major}.0.0" compatible unsuitable pkg_version)
    if(compatible)
      list(APPEND errors "xentConfigVersion.cmake accepts a request for ${next_major}.0.0")
    endif()
  endif()
endif()

# Targets file: the imported target must carry the installed include directory.
set(tf "${P}/share/cmake/xent/xentTargets.cmake")
if(EXISTS "${tf}")
  file(READ "${tf}" text)
  if(NOT text MATCHES "INTERFACE_INCLUDE_DIRECTORIES \"[^\"]*\\\${_IMPORT_PREFIX}/include[\";]")
    list(APPEND errors "xentTargets.cmake: xent::xent has no INTERFACE_INCLUDE_DIRECTORIES \"\${_IMPORT_PREFIX}/include\" (was CMAKE_INSTALL_INCLUDEDIR empty in $<INSTALL_INTERFACE:...>, i.e. used before include(GNUInstallDirs)?)")
  endif()
endif()

# Config file: must find Eigen for the consumer.
set(cf "${P}/share/cmake/xent/xentConfig.cmake")
if(EXISTS "${cf}")
  file(READ "${cf}" text)
  if(NOT text MATCHES "find_dependency\\(Eigen3")
    list(APPEND errors "xentConfig.cmake does not find_dependency(Eigen3 ...)")
  endif()
endif()

# Installed CMake files and .pc must not point back into the source or build tree.
file(GLOB cmake_files "${P}/share/cmake/xent/*.cmake" "${P}/share/pkgconfig/*.pc")
foreach(f IN LISTS cmake_files)
  file(READ "${f}" text)
  string(REPLACE "${P}" "" text "${text}")  # the prefix itself may live inside the build tree
  foreach(tree IN ITEMS XENT_SOURCE_DIR XENT_BUILD_DIR)
    if(${tree})
      string(FIND "${text}" "${${tree}}" at)
      if(NOT at EQUAL -1)
        list(APPEND errors "${f} refers to ${${tree}}")
      endif()
    endif()
  endforeach()
endforeach()

# pkg-config file: right prefix, version, include dir and Eigen requirement.
set(pc "${P}/share/pkgconfig/xent.pc")
if(EXISTS "${pc}")
  file(STRINGS "${pc}" lines)
  set(pc_prefix "")
  set(pc_version "")
  set(pc_requires "")
  set(pc_cflags "")
  foreach(line IN LISTS lines)
    if(line MATCHES "^prefix=(.*)$")
      set(pc_prefix "${CMAKE_MATCH_1}")
    elseif(line MATCHES "^Version: *(.*)$")
      set(pc_version "${CMAKE_MATCH_1}")
    elseif(line MATCHES "^Requires: *(.*)$")
      set(pc_requires "${CMAKE_MATCH_1}")
    elseif(line MATCHES "^Cflags: *(.*)$")
      set(pc_cflags "${CMAKE_MATCH_1}")
    endif()
  endforeach()
  file(REAL_PATH "${P}" real_p)
  if(pc_prefix STREQUAL "")
    list(APPEND errors "xent.pc has no prefix= line")
  else()
    # The file is relocatable: ${pcfiledir} is where pkg-config found it.
    string(REPLACE "\${pcfiledir}" "${P}/share/pkgconfig" pc_prefix "${pc_prefix}")
    file(REAL_PATH "${pc_prefix}" real_pc_prefix)
    if(NOT real_pc_prefix STREQUAL real_p)
      list(APPEND errors "xent.pc has prefix=${pc_prefix}, installed into ${P}")
    endif()
  endif()
  if(XENT_EXPECTED_VERSION AND NOT pc_version STREQUAL XENT_EXPECTED_VERSION)
    list(APPEND errors "xent.pc has Version: ${pc_version}, expected ${XENT_EXPECTED_VERSION}")
  endif()
  if(NOT pc_requires MATCHES "eigen3")
    list(APPEND errors "xent.pc does not require eigen3 (Requires: ${pc_requires})")
  endif()
  if(NOT pc_cflags MATCHES "-I")
    list(APPEND errors "xent.pc Cflags has no -I (Cflags: ${pc_cflags})")
  endif()
endif()

if(errors)
  list(JOIN errors "\n  " msg)
  message(FATAL_ERROR "installed layout under ${P} is wrong:\n  ${msg}")
endif()
file(GLOB_RECURSE installed RELATIVE "${P}" "${P}/*")
list(LENGTH installed n)
message(STATUS "installed layout OK (${n} files under ${P})")
