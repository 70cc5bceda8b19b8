// Compiled three times by CMakeLists.txt, once per instruction set, each time with its own
// -m flags and -DPRF_ISA_NAMESPACE=isa_<name> (plus PRF_ISA_AVX2 / PRF_ISA_AVX512).
#include "kernels_impl.hpp"

PRF_DEFINE_ISA_ENTRY_POINTS
