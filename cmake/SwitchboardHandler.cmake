# sb_add_handler(NAME SOURCES...)
#
# Builds a switchboard handler module: a shared object loaded with dlopen() by the
# `switchboard` daemon. Only the module's init entry point is exported; everything else is
# hidden. Works in the source tree and, once installed, from find_package(switchboard).
function(sb_add_handler name)
    add_library(${name} MODULE ${ARGN})
    set_target_properties(${name} PROPERTIES
        PREFIX ""
        C_VISIBILITY_PRESET hidden
        C_STANDARD 11
        C_STANDARD_REQUIRED ON)
    if(TARGET switchboard::headers)
        target_link_libraries(${name} PRIVATE switchboard::headers)
    else()
        target_link_libraries(${name} PRIVATE switchboard_headers)
    endif()
endfunction()
