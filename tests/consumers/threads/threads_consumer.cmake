# xent_threads_consumer(<name> <link> <openmp 0|1> <__cplusplus the consumer chose>): the program
# of threads/main.cpp linked to <link>, and a CTest test that runs it.
function(xent_threads_consumer name link openmp cplusplus)
  add_executable(${name} ${CMAKE_CURRENT_FUNCTION_LIST_DIR}/main.cpp)
  target_link_libraries(${name} PRIVATE ${link})
  target_compile_definitions(${name} PRIVATE XENT_CONSUMER_OPENMP=${openmp} XENT_CONSUMER_CPLUSPLUS=${cplusplus}L)
  add_test(NAME ${name} COMMAND ${name})
endfunction()

# pkg-config's flags for <module>, as an imported target PkgConfig::<prefix>, found through
# PKG_CONFIG_PATH only (consumers.cmake points it at the test prefix). Sets <prefix>_FOUND.
macro(xent_threads_pkg_config prefix module)
  if(PKG_CONFIG_EXECUTABLE)
    find_package(PkgConfig REQUIRED)
    set(PKG_CONFIG_USE_CMAKE_PREFIX_PATH OFF)
    pkg_check_modules(${prefix} REQUIRED IMPORTED_TARGET ${module})
    message(STATUS "pkg-config ${module}: cflags=${${prefix}_CFLAGS} libs=${${prefix}_LDFLAGS}")
    # A header-only library cannot choose its consumer's standard.
    if("${${prefix}_CFLAGS}" MATCHES "-std=")
      message(FATAL_ERROR "pkg-config --cflags ${module} names a C++ standard: ${${prefix}_CFLAGS}")
    endif()
  else()
    set(${prefix}_FOUND FALSE)
    message(STATUS "no PKG_CONFIG_EXECUTABLE: ${module} through pkg-config is not checked")
  endif()
endmacro()
