// Threading: one knob for the OpenMP pool that our loops and OpenBLAS (OpenMP build) share.
#pragma once

namespace kvroute {

void set_num_threads(int n);  // n <= 0: all hardware threads
int num_threads();

}  // namespace kvroute
