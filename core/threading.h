// Threading: one knob for the OpenMP pool that our loops and OpenBLAS (OpenMP build) share.
#pragma once

namespace kvroute {

void set_num_threads(int n);  // n <= 0: all hardware threads
int num_threads();

// GNU OpenMP's threads spin up to 300,000 times at each barrier before they sleep. When another
// process competes for the cores, the spinning threads burn the time slices the thread they wait
// for needs: on 2 cores next to 2 busy processes, 60 fine-tuning steps took 51 s instead of 11 s.
// libgomp reads its settings when it loads, before main, so when neither OMP_WAIT_POLICY nor
// GOMP_SPINCOUNT is set this sets GOMP_SPINCOUNT=10000 and executes the program again (same
// arguments, same process id); an explicit setting is left as it is, and if the exec fails the
// process goes on unchanged. Measured in docs/benchmarks.md (no cost when the cores are free).
void bound_openmp_spin_wait(char** argv);

}  // namespace kvroute
