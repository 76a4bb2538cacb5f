#include "distributed/communicator.h"

#include <mpi.h>

#include <algorithm>
#include <cstdlib>

#include "core/error.h"

namespace kvroute::dist {

namespace {

class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  void allreduce_sum(Tensor&, int64_t) override {}
  void allreduce_sum(std::vector<double>&) override {}
  void broadcast(Tensor&, int) override {}
  void barrier() override {}
  [[noreturn]] void abort(int code) override { std::exit(code); }
  std::string name() const override { return "local"; }
};

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &world_);
    // Ranks sharing a host (shared memory) form one group; the index in it picks the GPU.
    MPI_Comm local;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local);
    MPI_Comm_rank(local, &local_rank_);
    MPI_Comm_size(local, &local_size_);
    MPI_Comm_free(&local);
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }
  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }
  void allreduce_sum(Tensor& buffer, int64_t bucket_elements) override {
    KV_CHECK(buffer.device().is_cpu() && buffer.dtype() == DType::F32 && buffer.is_contiguous(),
             "mpi allreduce: expected a contiguous f32 CPU buffer, got {}", buffer.str());
    float* data = buffer.data<float>();
    const int64_t n = buffer.numel();
    bucket_elements = std::max<int64_t>(bucket_elements, 1);
    for (int64_t begin = 0; begin < n; begin += bucket_elements) {
      const int count = static_cast<int>(std::min(bucket_elements, n - begin));
      check(MPI_Allreduce(MPI_IN_PLACE, data + begin, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce");
    }
  }
  void allreduce_sum(std::vector<double>& values) override {
    check(MPI_Allreduce(MPI_IN_PLACE, values.data(), static_cast<int>(values.size()), MPI_DOUBLE, MPI_SUM,
                        MPI_COMM_WORLD),
          "MPI_Allreduce");
  }
  void broadcast(Tensor& buffer, int root) override {
    KV_CHECK(buffer.device().is_cpu() && buffer.is_contiguous(), "mpi broadcast: expected a contiguous CPU buffer, got {}",
             buffer.str());
    char* data = static_cast<char*>(buffer.raw_data());
    const size_t n = buffer.nbytes();
    constexpr size_t kChunk = size_t{1} << 30;
    for (size_t begin = 0; begin < n; begin += kChunk) {
      check(MPI_Bcast(data + begin, static_cast<int>(std::min(kChunk, n - begin)), MPI_BYTE, root, MPI_COMM_WORLD),
            "MPI_Bcast");
    }
  }
  void barrier() override { check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier"); }
  [[noreturn]] void abort(int code) override {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::exit(code);
  }
  std::string name() const override { return "mpi"; }

 private:
  static void check(int rc, const char* what) { KV_CHECK(rc == MPI_SUCCESS, "{} failed with MPI error {}", what, rc); }
  int rank_ = 0, world_ = 1, local_rank_ = 0, local_size_ = 1;
};

}  // namespace

bool launched_by_mpi() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMI_SIZE") != nullptr ||
         std::getenv("PMIX_RANK") != nullptr;
}

int launcher_rank() {
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"}) {
    const char* v = std::getenv(name);
    if (v != nullptr && *v != '\0') return std::atoi(v);
  }
  return 0;
}

std::unique_ptr<Communicator> make_local_communicator() { return std::make_unique<LocalCommunicator>(); }

const char* backend_name(Backend backend) {
  switch (backend) {
    case Backend::Auto: return "auto";
    case Backend::Mpi: return "mpi";
    case Backend::None: return "none";
  }
  return "?";
}

std::unique_ptr<Communicator> make_communicator(Backend backend) {
  if (backend == Backend::Mpi || (backend == Backend::Auto && launched_by_mpi())) {
    return std::make_unique<MpiCommunicator>();
  }
  return make_local_communicator();
}

int64_t bucket_elements(double bucket_mb) {
  return std::max<int64_t>(1, static_cast<int64_t>(bucket_mb * 1024 * 1024 / sizeof(float)));
}

}  // namespace kvroute::dist
