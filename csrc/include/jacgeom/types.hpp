// The types every kernel shares.
#pragma once

#include <cstdint>

namespace jacgeom {

// Sizes and indices: 64-bit, so arrays beyond 2^31 entries index correctly.
using index_t = std::int64_t;

}  // namespace jacgeom
