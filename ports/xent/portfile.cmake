# Header-only: one release configuration, nothing in lib/.
set(VCPKG_BUILD_TYPE release)

# An overlay port kept in the repository it packages: the sources are the checkout around it
# (vcpkg install xent --overlay-ports=<repo>/ports). A registry copy of this port would fetch a
# tagged release with vcpkg_from_github instead; nothing else changes.
get_filename_component(SOURCE_PATH "${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)

vcpkg_cmake_configure(
    SOURCE_PATH "${SOURCE_PATH}"
    OPTIONS
        -DXENT_BUILD_TESTS=OFF
        -DXENT_BUILD_EXAMPLES=OFF
        -DXENT_BUILD_BENCH=OFF
        -DXENT_BUILD_TOOLS=OFF
        -DXENT_BUILD_DOCS=OFF
        -DXENT_INSTALL=ON
        # No mpi component: whether the builder happens to have a system MPI must not change the package.
        -DXENT_MPI=OFF
        # The openmp component (xent::openmp, xent-openmp.pc) comes with the compiler, not from a port:
        # always offered, never imposed (xent::xent stays serial; see usage).
        -DXENT_OPENMP=ON
)
vcpkg_cmake_install()
vcpkg_cmake_config_fixup(CONFIG_PATH share/cmake/xent)
vcpkg_fixup_pkgconfig()

file(REMOVE_RECURSE "${CURRENT_PACKAGES_DIR}/debug" "${CURRENT_PACKAGES_DIR}/lib")
file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
