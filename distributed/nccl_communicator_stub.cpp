// Built when kvroute has no CUDA backend: asking for NCCL is a clear error.
#include "core/error.h"
#include "distributed/communicator.h"

namespace kvroute::dist {

std::unique_ptr<Communicator> make_nccl_communicator(Communicator& host) {
  KV_FAIL("rank {}: NCCL needs the CUDA backend, which this build of kvroute does not have", host.rank());
}

}  // namespace kvroute::dist
