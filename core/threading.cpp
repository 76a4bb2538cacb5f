#include "core/threading.h"

#include <omp.h>

namespace kvroute {

void set_num_threads(int n) {
  if (n <= 0) n = omp_get_num_procs();
  // OpenBLAS' OpenMP build follows omp_set_num_threads for its own parallel regions.
  omp_set_num_threads(n);
}

int num_threads() { return omp_get_max_threads(); }

}  // namespace kvroute
