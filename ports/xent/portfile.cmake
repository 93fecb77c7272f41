# Header-only: one release configuration, nothing in lib/.
set(VCPKG_BUILD_TYPE release)

# REF and SHA512 name a published release archive; fill both in when a version is tagged
# (vcpkg prints the SHA512 to use on the first install attempt).
vcpkg_from_github(
    OUT_SOURCE_PATH SOURCE_PATH
    REPO xent-project/xent  # the published repository's owner/name
    REF "v${VERSION}"
    SHA512 0
    HEAD_REF main
)

vcpkg_cmake_configure(
    SOURCE_PATH "${SOURCE_PATH}"
    OPTIONS
        -DXENT_BUILD_TESTS=OFF
        -DXENT_BUILD_EXAMPLES=OFF
        -DXENT_BUILD_BENCH=OFF
        -DXENT_INSTALL=ON
)
vcpkg_cmake_install()
vcpkg_cmake_config_fixup(CONFIG_PATH share/cmake/xent)
vcpkg_fixup_pkgconfig()

file(REMOVE_RECURSE "${CURRENT_PACKAGES_DIR}/debug" "${CURRENT_PACKAGES_DIR}/lib")
file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
