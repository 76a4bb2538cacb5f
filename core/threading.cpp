#include "core/threading.h"

#include <omp.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

namespace kvroute {

void set_num_threads(int n) {
  if (n <= 0) n = omp_get_num_procs();
  // OpenBLAS' OpenMP build follows omp_set_num_threads for its own parallel regions.
  omp_set_num_threads(n);
}

int num_threads() { return omp_get_max_threads(); }

void bound_openmp_spin(char** argv) {
  // The user's choice (either variable, even empty) is kept as given.
  if (std::getenv("OMP_WAIT_POLICY") != nullptr || std::getenv("GOMP_SPINCOUNT") != nullptr) return;
  if (setenv("GOMP_SPINCOUNT", std::to_string(kOpenMpSpinCount).c_str(), 0) != 0) return;
  execv("/proc/self/exe", argv);
  // Not reached unless exec failed (no /proc): run on with libgomp's default spin; the variable
  // stays set for the processes this one starts.
}

}  // namespace kvroute
