#include "distributed/communicator.h"

#include <mpi.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace kvroute::dist {

namespace {

// Checks what every ZeRO collective expects: counts for every rank, a contiguous buffer of exactly
// their sum (or, for a piece, of this rank's count), on the given dtype.
void check_pieces(const Communicator& comm, const char* what, const std::vector<int64_t>& counts, const Tensor* full,
                  const Tensor* piece) {
  KV_CHECK(static_cast<int>(counts.size()) == comm.world_size(), "{}: {} counts for {} ranks", what, counts.size(),
           comm.world_size());
  int64_t total = 0;
  for (int64_t c : counts) {
    KV_CHECK(c >= 0, "{}: negative count {}", what, c);
    total += c;
  }
  if (full != nullptr) {
    KV_CHECK(full->defined() && full->is_contiguous() && full->numel() == total,
             "{}: expected a contiguous buffer of {} elements, got {}", what, total,
             full->defined() ? full->str() : std::string("none"));
  }
  if (piece != nullptr) {
    const int64_t mine = counts[static_cast<size_t>(comm.rank())];
    KV_CHECK(piece->defined() && piece->is_contiguous() && piece->numel() == mine,
             "{}: expected a contiguous piece of {} elements, got {}", what, mine,
             piece->defined() ? piece->str() : std::string("none"));
  }
}

std::vector<int64_t> offsets_of(const std::vector<int64_t>& counts) {
  std::vector<int64_t> offsets(counts.size() + 1, 0);
  for (size_t r = 0; r < counts.size(); ++r) offsets[r + 1] = offsets[r] + counts[r];
  return offsets;
}

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
  // The ZeRO collectives as one collective per piece (rooted at its owner), in chunks that keep
  // every count and offset inside MPI's int: reduce to the owner, broadcast from the owner,
  // send to the root. With 2 ranks a reduction is the same single addition as MPI_Allreduce's, so
  // a sharded run matches plain data parallelism bit for bit (tests/train/test_distributed.cpp).
  void reduce_scatter_sum(const Tensor& send, Tensor& recv, const std::vector<int64_t>& counts) override {
    check_pieces(*this, "mpi reduce_scatter", counts, &send, &recv);
    KV_CHECK(send.dtype() == DType::F32 && recv.dtype() == DType::F32 && send.device().is_cpu() && recv.device().is_cpu(),
             "mpi reduce_scatter: expected f32 CPU buffers, got {} and {}", send.str(), recv.str());
    const std::vector<int64_t> offsets = offsets_of(counts);
    const float* in = send.data<float>();
    float* out = recv.data<float>();
    for (int r = 0; r < world_; ++r) {
      for (int64_t begin = 0; begin < counts[static_cast<size_t>(r)]; begin += kChunkElements) {
        const int count = static_cast<int>(std::min(kChunkElements, counts[static_cast<size_t>(r)] - begin));
        check(MPI_Reduce(in + offsets[static_cast<size_t>(r)] + begin, r == rank_ ? out + begin : nullptr, count,
                         MPI_FLOAT, MPI_SUM, r, MPI_COMM_WORLD),
              "MPI_Reduce");
      }
    }
  }
  void all_gather(Tensor& buffer, const std::vector<int64_t>& counts) override {
    check_pieces(*this, "mpi all_gather", counts, &buffer, nullptr);
    KV_CHECK(buffer.device().is_cpu(), "mpi all_gather: expected a CPU buffer, got {}", buffer.str());
    const std::vector<int64_t> offsets = offsets_of(counts);
    const size_t element = buffer.element_size();
    char* data = static_cast<char*>(buffer.raw_data());
    for (int r = 0; r < world_; ++r) {
      const size_t bytes = static_cast<size_t>(counts[static_cast<size_t>(r)]) * element;
      char* piece = data + static_cast<size_t>(offsets[static_cast<size_t>(r)]) * element;
      for (size_t begin = 0; begin < bytes; begin += kChunkBytes) {
        check(MPI_Bcast(piece + begin, static_cast<int>(std::min(kChunkBytes, bytes - begin)), MPI_BYTE, r,
                        MPI_COMM_WORLD),
              "MPI_Bcast");
      }
    }
  }
  void gather(const Tensor& piece, Tensor& full, const std::vector<int64_t>& counts, int root) override {
    check_pieces(*this, "mpi gather", counts, rank_ == root ? &full : nullptr, &piece);
    KV_CHECK(piece.device().is_cpu() && (rank_ != root || (full.device().is_cpu() && full.dtype() == piece.dtype())),
             "mpi gather: expected CPU buffers of one dtype, got {}", piece.str());
    const std::vector<int64_t> offsets = offsets_of(counts);
    const size_t element = piece.element_size();
    for (int r = 0; r < world_; ++r) {
      const size_t bytes = static_cast<size_t>(counts[static_cast<size_t>(r)]) * element;
      if (r == root && rank_ == root) {
        std::memcpy(static_cast<char*>(full.raw_data()) + static_cast<size_t>(offsets[static_cast<size_t>(r)]) * element,
                    piece.raw_data(), bytes);
      } else if (rank_ == root) {
        char* at = static_cast<char*>(full.raw_data()) + static_cast<size_t>(offsets[static_cast<size_t>(r)]) * element;
        for (size_t begin = 0; begin < bytes; begin += kChunkBytes) {
          check(MPI_Recv(at + begin, static_cast<int>(std::min(kChunkBytes, bytes - begin)), MPI_BYTE, r, 0,
                         MPI_COMM_WORLD, MPI_STATUS_IGNORE),
                "MPI_Recv");
        }
      } else if (rank_ == r) {
        const char* at = static_cast<const char*>(piece.raw_data());
        for (size_t begin = 0; begin < bytes; begin += kChunkBytes) {
          check(MPI_Send(at + begin, static_cast<int>(std::min(kChunkBytes, bytes - begin)), MPI_BYTE, root, 0,
                         MPI_COMM_WORLD),
                "MPI_Send");
        }
      }
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
  static constexpr int64_t kChunkElements = int64_t{1} << 28;
  static constexpr size_t kChunkBytes = size_t{1} << 30;
  int rank_ = 0, world_ = 1, local_rank_ = 0, local_size_ = 1;
};

}  // namespace

// One rank: the pieces are the whole buffer.
void Communicator::reduce_scatter_sum(const Tensor& send, Tensor& recv, const std::vector<int64_t>& counts) {
  KV_CHECK(world_size() == 1, "{} communicator: reduce_scatter is not supported", name());
  check_pieces(*this, "reduce_scatter", counts, &send, &recv);
  if (recv.raw_data() != send.raw_data()) recv.copy_(send);
}
void Communicator::all_gather(Tensor& buffer, const std::vector<int64_t>& counts) {
  KV_CHECK(world_size() == 1, "{} communicator: all_gather is not supported", name());
  check_pieces(*this, "all_gather", counts, &buffer, nullptr);
}
void Communicator::gather(const Tensor& piece, Tensor& full, const std::vector<int64_t>& counts, int root) {
  KV_CHECK(world_size() == 1 && root == 0, "{} communicator: gather is not supported", name());
  check_pieces(*this, "gather", counts, &full, &piece);
  if (full.raw_data() != piece.raw_data()) full.copy_(piece);
}

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
