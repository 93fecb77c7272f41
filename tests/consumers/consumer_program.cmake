# The one consumer program every packaging test builds (find_package/main.cpp), linked to `link`,
# told which version to expect from the headers.
function(xent_consumer_program link)
  add_executable(xent_consumer ${CMAKE_CURRENT_LIST_DIR}/../find_package/main.cpp)
  target_link_libraries(xent_consumer PRIVATE ${link})
  if(XENT_EXPECTED_VERSION MATCHES "^([0-9]+)\\.([0-9]+)\\.([0-9]+)")
    target_compile_definitions(xent_consumer PRIVATE
      XENT_EXPECTED_VERSION_MAJOR=${CMAKE_MATCH_1}
      XENT_EXPECTED_VERSION_MINOR=${CMAKE_MATCH_2}
      XENT_EXPECTED_VERSION_PATCH=${CMAKE_MATCH_3})
  endif()
endfunction()

# The MPI consumer program (find_package_mpi/main.cpp), linked to xent::mpi.
function(xent_mpi_consumer_program)
  add_executable(xent_mpi_consumer ${CMAKE_CURRENT_LIST_DIR}/../find_package_mpi/main.cpp)
  target_link_libraries(xent_mpi_consumer PRIVATE xent::mpi)
endfunction()
