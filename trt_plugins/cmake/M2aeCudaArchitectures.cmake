# Chooses CMAKE_CUDA_ARCHITECTURES before enable_language(CUDA), in this order:
#   1. the list the user passed (-DCMAKE_CUDA_ARCHITECTURES="87;90");
#   2. M2AE_JETSON_TARGET=orin|thor|xavier (cross-building for a Jetson);
#   3. this machine is a Jetson (/etc/nv_tegra_release): L4T R38+ is Thor (110),
#      R35/R36 is Orin (87) unless the device tree names a Xavier (72);
#   4. the compute capabilities nvidia-smi reports for the GPUs present.
# With none of these the configure step stops and says what to pass.

set(M2AE_JETSON_TARGET "" CACHE STRING "Jetson to build for: orin (sm_87), thor (sm_110) or xavier (sm_72)")

function(m2ae_jetson_arch target out_var)
    string(TOLOWER "${target}" target)
    if(target STREQUAL "orin")
        set(${out_var} "87" PARENT_SCOPE)
    elseif(target STREQUAL "thor")
        set(${out_var} "110" PARENT_SCOPE)
    elseif(target STREQUAL "xavier")
        set(${out_var} "72" PARENT_SCOPE)
    else()
        message(FATAL_ERROR "M2AE_JETSON_TARGET='${target}': expected orin, thor or xavier")
    endif()
endfunction()

function(m2ae_detect_tegra_arch out_var)
    set(${out_var} "" PARENT_SCOPE)
    if(NOT EXISTS "/etc/nv_tegra_release")
        return()
    endif()
    file(STRINGS "/etc/nv_tegra_release" release LIMIT_COUNT 1)
    if(NOT release MATCHES "R([0-9]+)")
        return()
    endif()
    set(l4t_major "${CMAKE_MATCH_1}")
    set(model "")
    if(EXISTS "/proc/device-tree/model")
        file(READ "/proc/device-tree/model" model)
        string(TOLOWER "${model}" model)
    endif()
    if(l4t_major GREATER_EQUAL 38 OR model MATCHES "thor")
        set(${out_var} "110" PARENT_SCOPE)
    elseif(model MATCHES "xavier")
        set(${out_var} "72" PARENT_SCOPE)
    else()
        set(${out_var} "87" PARENT_SCOPE)
    endif()
endfunction()

function(m2ae_detect_gpu_archs out_var)
    set(${out_var} "" PARENT_SCOPE)
    find_program(M2AE_NVIDIA_SMI nvidia-smi)
    if(NOT M2AE_NVIDIA_SMI)
        return()
    endif()
    execute_process(
        COMMAND "${M2AE_NVIDIA_SMI}" --query-gpu=compute_cap --format=csv,noheader
        OUTPUT_VARIABLE caps
        RESULT_VARIABLE rc
        ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
    if(NOT rc EQUAL 0 OR caps STREQUAL "")
        return()
    endif()
    string(REPLACE "." "" caps "${caps}")
    string(REGEX REPLACE "[\r\n]+" ";" caps "${caps}")
    list(REMOVE_DUPLICATES caps)
    set(${out_var} "${caps}" PARENT_SCOPE)
endfunction()

if(NOT CMAKE_CUDA_ARCHITECTURES)
    set(m2ae_archs "")
    set(m2ae_arch_source "")
    if(M2AE_JETSON_TARGET)
        m2ae_jetson_arch("${M2AE_JETSON_TARGET}" m2ae_archs)
        set(m2ae_arch_source "M2AE_JETSON_TARGET=${M2AE_JETSON_TARGET}")
    endif()
    if(NOT m2ae_archs)
        m2ae_detect_tegra_arch(m2ae_archs)
        set(m2ae_arch_source "/etc/nv_tegra_release")
    endif()
    if(NOT m2ae_archs)
        m2ae_detect_gpu_archs(m2ae_archs)
        set(m2ae_arch_source "nvidia-smi")
    endif()
    if(NOT m2ae_archs)
        message(FATAL_ERROR
            "No GPU or Jetson found to choose CUDA architectures for: pass them, e.g. "
            "-DCMAKE_CUDA_ARCHITECTURES=\"87;90\" (m2ae plugin build --arch 87,90) "
            "or -DM2AE_JETSON_TARGET=orin")
    endif()
    set(CMAKE_CUDA_ARCHITECTURES "${m2ae_archs}" CACHE STRING "CUDA architectures to build for" FORCE)
    message(STATUS "m2ae: CUDA architectures ${CMAKE_CUDA_ARCHITECTURES} (from ${m2ae_arch_source})")
else()
    message(STATUS "m2ae: CUDA architectures ${CMAKE_CUDA_ARCHITECTURES} (given)")
endif()
