#include "core/threading.h"

#include <omp.h>
#include <unistd.h>

#include <cstdlib>

namespace kvroute {

void set_num_threads(int n) {
  if (n <= 0) n = omp_get_num_procs();
  // OpenBLAS' OpenMP build follows omp_set_num_threads for its own parallel regions.
  omp_set_num_threads(n);
}

int num_threads() { return omp_get_max_threads(); }

void bound_openmp_spin_wait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr || std::getenv("GOMP_SPINCOUNT") != nullptr) return;
  if (setenv("GOMP_SPINCOUNT", "10000", 1) != 0) return;
  execv("/proc/self/exe", argv);
  // Only reached when the exec failed (no /proc): go on with libgomp's defaults; the variable set
  // above keeps child processes from trying again.
}

}  // namespace kvroute
