# Finds TensorRT's headers and libnvinfer in the layouts it ships in:
#   - TENSORRT_ROOT (CMake or environment variable): a tarball install, <root>/include
#     and <root>/lib;
#   - JetPack / Debian packages: /usr/include/<arch>-linux-gnu, /usr/lib/<arch>-linux-gnu;
#   - pip wheels: the tensorrt_libs package (libnvinfer.so.<major>, no unversioned link)
#     and, when present, a tensorrt include dir next to it; wheels carry no headers,
#     so pair them with TENSORRT_ROOT or TensorRT_INCLUDE_DIR pointing at headers of the
#     same version.
# Sets TensorRT_FOUND, TensorRT_INCLUDE_DIR, TensorRT_LIBRARY (when found),
# TensorRT_VERSION, TensorRT_VERSION_MAJOR/MINOR/PATCH and the imported target
# TensorRT::nvinfer (only with a library). TensorRT_HEADERS_FOUND says the headers alone
# were found.

set(TENSORRT_ROOT "$ENV{TENSORRT_ROOT}" CACHE PATH "TensorRT install root (has include/ and lib/)")

set(_m2ae_trt_arch "${CMAKE_LIBRARY_ARCHITECTURE}")
if(NOT _m2ae_trt_arch)
    set(_m2ae_trt_arch "${CMAKE_SYSTEM_PROCESSOR}-linux-gnu")
endif()

set(_m2ae_trt_include_hints "")
set(_m2ae_trt_lib_hints "")
if(TENSORRT_ROOT)
    list(APPEND _m2ae_trt_include_hints "${TENSORRT_ROOT}/include" "${TENSORRT_ROOT}")
    list(APPEND _m2ae_trt_lib_hints "${TENSORRT_ROOT}/lib" "${TENSORRT_ROOT}/lib64" "${TENSORRT_ROOT}/targets/${CMAKE_SYSTEM_PROCESSOR}-linux-gnu/lib")
endif()

# Pip wheels: ask the Python that runs the build where tensorrt_libs lives.
find_package(Python3 COMPONENTS Interpreter QUIET)
if(Python3_Interpreter_FOUND)
    execute_process(
        COMMAND "${Python3_EXECUTABLE}" -c
            "import importlib.util as u, os\nfor n in ('tensorrt_libs', 'tensorrt'):\n    s = u.find_spec(n)\n    if s and s.submodule_search_locations:\n        print(list(s.submodule_search_locations)[0])"
        OUTPUT_VARIABLE _m2ae_trt_wheel_dirs
        ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
    string(REGEX REPLACE "[\r\n]+" ";" _m2ae_trt_wheel_dirs "${_m2ae_trt_wheel_dirs}")
    foreach(_dir IN LISTS _m2ae_trt_wheel_dirs)
        list(APPEND _m2ae_trt_lib_hints "${_dir}")
        list(APPEND _m2ae_trt_include_hints "${_dir}/include")
    endforeach()
endif()

list(APPEND _m2ae_trt_include_hints "/usr/include/${_m2ae_trt_arch}" "/usr/include/aarch64-linux-gnu"
    "/usr/include/x86_64-linux-gnu" "/usr/local/TensorRT/include" "/usr/include")
list(APPEND _m2ae_trt_lib_hints "/usr/lib/${_m2ae_trt_arch}" "/usr/lib/aarch64-linux-gnu"
    "/usr/lib/x86_64-linux-gnu" "/usr/local/TensorRT/lib" "/usr/lib")

find_path(TensorRT_INCLUDE_DIR NvInferVersion.h HINTS ${_m2ae_trt_include_hints} NO_CMAKE_SYSTEM_PATH)

set(TensorRT_VERSION "")
if(TensorRT_INCLUDE_DIR)
    file(READ "${TensorRT_INCLUDE_DIR}/NvInferVersion.h" _m2ae_trt_version_h)
    foreach(_part MAJOR MINOR PATCH)
        # TensorRT 10 defines NV_TENSORRT_<PART> as a number; 11 points it at
        # TRT_<PART>_ENTERPRISE.
        if(_m2ae_trt_version_h MATCHES "#define NV_TENSORRT_${_part} ([0-9]+)")
            set(TensorRT_VERSION_${_part} "${CMAKE_MATCH_1}")
        elseif(_m2ae_trt_version_h MATCHES "#define TRT_${_part}_ENTERPRISE ([0-9]+)")
            set(TensorRT_VERSION_${_part} "${CMAKE_MATCH_1}")
        endif()
    endforeach()
    set(TensorRT_VERSION "${TensorRT_VERSION_MAJOR}.${TensorRT_VERSION_MINOR}.${TensorRT_VERSION_PATCH}")
endif()

if(NOT TensorRT_LIBRARY)
    find_library(TensorRT_LIBRARY NAMES nvinfer HINTS ${_m2ae_trt_lib_hints} NO_CMAKE_SYSTEM_PATH)
    if(NOT TensorRT_LIBRARY AND TensorRT_VERSION_MAJOR)
        # Wheels ship only libnvinfer.so.<major>.
        foreach(_dir IN LISTS _m2ae_trt_lib_hints)
            if(EXISTS "${_dir}/libnvinfer.so.${TensorRT_VERSION_MAJOR}")
                set(TensorRT_LIBRARY "${_dir}/libnvinfer.so.${TensorRT_VERSION_MAJOR}" CACHE FILEPATH "libnvinfer" FORCE)
                break()
            endif()
        endforeach()
    endif()
endif()

set(TensorRT_HEADERS_FOUND FALSE)
if(TensorRT_INCLUDE_DIR AND EXISTS "${TensorRT_INCLUDE_DIR}/NvInferRuntime.h")
    set(TensorRT_HEADERS_FOUND TRUE)
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(TensorRT
    REQUIRED_VARS TensorRT_LIBRARY TensorRT_INCLUDE_DIR
    VERSION_VAR TensorRT_VERSION)

if(TensorRT_FOUND AND NOT TARGET TensorRT::nvinfer)
    add_library(TensorRT::nvinfer SHARED IMPORTED)
    set_target_properties(TensorRT::nvinfer PROPERTIES
        IMPORTED_LOCATION "${TensorRT_LIBRARY}"
        INTERFACE_INCLUDE_DIRECTORIES "${TensorRT_INCLUDE_DIR}")
endif()

mark_as_advanced(TensorRT_INCLUDE_DIR TensorRT_LIBRARY)
