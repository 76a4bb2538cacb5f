// Threading: one knob for the OpenMP pool that our loops and OpenBLAS (OpenMP build) share, and how
// long its idle threads spin.
#pragma once

namespace kvroute {

void set_num_threads(int n);  // n <= 0: all hardware threads
int num_threads();

// How many iterations an idle OpenMP thread spins before it sleeps, by default (GOMP_SPINCOUNT).
// libgomp's own default spins for about 300,000 iterations (hundreds of microseconds) between
// parallel regions, which is fastest on cores nobody else wants and wastes them when another
// process shares the machine: measured beside one busy process on 2 cores, the bf16 quickstart
// step ran at 0.33x its quiet speed with libgomp's default, 0.46x with this bound, and lost at most
// ~1% alone (docs/benchmarks.md).
inline constexpr int kOpenMpSpinCount = 3000;

// Called first in main. libgomp reads OMP_WAIT_POLICY and GOMP_SPINCOUNT once, when it loads
// (before main), so unless the user set either one, this sets GOMP_SPINCOUNT=kOpenMpSpinCount and
// re-executes the program (/proc/self/exe, the same arguments; a few milliseconds). Returns when
// nothing needs to change, or when the re-execution is impossible (then libgomp's default stays).
void bound_openmp_spin(char** argv);

}  // namespace kvroute
