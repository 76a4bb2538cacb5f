// Communicator: what data-parallel training needs from the ranks. LocalCommunicator is one
// process; MpiCommunicator (Open MPI) reduces CPU tensors. The NCCL communicator of the CUDA
// backend implements the same interface.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace kvroute::train {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // In-place sum over ranks of a contiguous f32 buffer, in buckets of bucket_elements.
  virtual void allreduce_sum(Tensor& buffer, int64_t bucket_elements) = 0;
  virtual void allreduce_sum(std::vector<double>& values) = 0;
  virtual void broadcast(Tensor& buffer, int root) = 0;
  virtual void barrier() = 0;
  // Ends every rank promptly with `code` (MPI_Abort); the local version just exits.
  [[noreturn]] virtual void abort(int code) = 0;
  virtual std::string name() const = 0;
};

// One process, no communication (world size 1).
std::unique_ptr<Communicator> make_local_communicator();
// backend: "auto" (MPI when launched by mpirun), "mpi", "none".
std::unique_ptr<Communicator> make_communicator(const std::string& backend);
// True when this process was started by mpirun/mpiexec (Open MPI's environment).
bool launched_by_mpi();

}  // namespace kvroute::train
