// The op layer: argument checks with readable errors, then dispatch by device to the CPU or CUDA
// kernels. This is the only file that chooses a backend, and every op does it the same way:
// device.is_cuda() ? cuda::op(...) : cpu::op(...). A build without CUDA links
// kernels/cuda/stub.cpp, whose functions fail with an error naming the op.
#include "kernels/ops.h"

#include <cmath>
#include <initializer_list>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/profile.h"
#include "kernels/cuda/cuda_ops.h"

namespace kvroute::ops {

namespace {

// All tensors defined, f32, on one device; returns that device.
Device check_f32_same_device(const char* op, std::initializer_list<const Tensor*> tensors) {
  Device device = (*tensors.begin())->device();
  for (const Tensor* t : tensors) {
    KV_CHECK(t->defined(), "{}: undefined tensor argument", op);
    KV_CHECK(t->dtype() == DType::F32, "{}: expected f32 tensors, got {}", op, t->str());
    KV_CHECK(t->device() == device, "{}: tensors on different devices ({} and {})", op, device, t->device());
  }
  return device;
}

// Activations: f32 anywhere, bf16 on CUDA; all of one dtype and one device.
struct Placement {
  Device device;
  DType dtype;
};
Placement check_floats(const char* op, std::initializer_list<const Tensor*> tensors) {
  const Tensor& first = **tensors.begin();
  KV_CHECK(first.defined(), "{}: undefined tensor argument", op);
  Placement where{first.device(), first.dtype()};
  for (const Tensor* t : tensors) {
    KV_CHECK(t->defined(), "{}: undefined tensor argument", op);
    KV_CHECK(t->device() == where.device, "{}: tensors on different devices ({} and {})", op, where.device,
             t->device());
    KV_CHECK(t->dtype() == where.dtype, "{}: tensors of different dtypes ({} and {})", op, first.str(), t->str());
  }
  KV_CHECK(where.dtype == DType::F32 || (where.dtype == DType::BF16 && where.device.is_cuda()),
           "{}: {} tensors are not supported on {} (the CPU kernels are f32; bf16 needs the CUDA backend)", op,
           where.dtype, where.device);
  return where;
}

void check_output(const char* op, const Tensor& out, const Shape& shape, Device device, DType dtype = DType::F32) {
  KV_CHECK(out.defined(), "{}: output tensor is undefined", op);
  KV_CHECK(out.dtype() == dtype, "{}: output must be {}, got {}", op, dtype, out.str());
  KV_CHECK(out.shape() == shape, "{}: output shape {} does not match expected {}", op, out.shape(), shape);
  KV_CHECK(out.device() == device, "{}: output on {} but inputs on {}", op, out.device(), device);
  KV_CHECK(out.is_contiguous(), "{}: output {} must be contiguous", op, out.str());
}

void check_f32_operand(const char* op, const char* what, const Tensor& t, Device device) {
  KV_CHECK(t.defined(), "{}: undefined {}", op, what);
  KV_CHECK(t.dtype() == DType::F32, "{}: {} must be f32, got {}", op, what, t.str());
  KV_CHECK(t.device() == device, "{}: {} on {} but the other operands on {}", op, what, t.device(), device);
}

// Token ids as contiguous i32 on the host, each checked against the vocabulary size.
Tensor checked_tokens(const char* op, const Tensor& tokens, int64_t vocab, int64_t ignore_index = -1,
                      bool allow_ignore = false) {
  KV_CHECK(tokens.defined(), "{}: undefined token tensor", op);
  KV_CHECK(tokens.dtype() == DType::I32 || tokens.dtype() == DType::U16 || tokens.dtype() == DType::U32,
           "{}: token ids must be i32, u16 or u32, got {}", op, tokens.str());
  Tensor ids = tokens.to(Device::cpu()).to(DType::I32).contiguous();
  const int32_t* p = ids.data<int32_t>();
  for (int64_t i = 0; i < ids.numel(); ++i) {
    if (allow_ignore && p[i] == ignore_index) continue;
    KV_CHECK(p[i] >= 0 && p[i] < vocab, "{}: token id {} at index {} is outside the vocabulary [0, {})", op,
             p[i], i, vocab);
  }
  return ids;
}

// GEMM operands: as check_floats, except that with bf16 GEMMs on the CPU either operand may
// already be bf16 (a norm's output or a gradient rounded once for the GEMMs that read it).
Placement check_matmul_operands(const char* op, const Tensor& a, const Tensor& b, const Execution& ex) {
  KV_CHECK(a.defined() && b.defined(), "{}: undefined tensor argument", op);
  if (a.device().is_cuda() || (a.dtype() != DType::BF16 && b.dtype() != DType::BF16)) return check_floats(op, {&a, &b});
  KV_CHECK(ex.cpu_bf16_gemm, "{}: bf16 operands on the CPU need bf16 GEMMs (got {} and {})", op, a.str(), b.str());
  for (const Tensor* t : {&a, &b}) {
    KV_CHECK(t->device() == a.device(), "{}: tensors on different devices ({} and {})", op, a.device(), t->device());
    KV_CHECK(t->dtype() == DType::F32 || t->dtype() == DType::BF16, "{}: expected f32 or bf16 operands, got {}", op,
             t->str());
  }
  return {a.device(), DType::F32};
}

// How a (batch of) matrix is laid out for BLAS, read from strides without copying.
struct BlasMatrix {
  const void* ptr = nullptr;
  int64_t ld = 0;
  bool trans = false;         // effective transpose flag to pass to BLAS (row-major)
  int64_t batch_stride = 0;   // elements between consecutive matrices
};

bool describe_matrix(const Tensor& x, bool trans, int64_t batch, BlasMatrix& m) {
  const int64_t rows = x.size(-2), cols = x.size(-1);
  const int64_t s_row = x.stride(-2), s_col = x.stride(-1);
  if (s_col == 1 && (s_row >= std::max<int64_t>(cols, 1) || rows == 1)) {
    m.ld = std::max(s_row, std::max<int64_t>(cols, 1));
    m.trans = trans;
  } else if (s_row == 1 && (s_col >= std::max<int64_t>(rows, 1) || cols == 1)) {
    m.ld = std::max(s_col, std::max<int64_t>(rows, 1));
    m.trans = !trans;
  } else {
    return false;
  }
  // The batch dims must collapse into one stride.
  m.batch_stride = 0;
  if (x.dim() > 2 && batch > 1) {
    int64_t expected = -1;
    for (int64_t d = x.dim() - 3; d >= 0; --d) {
      if (x.size(d) == 1) continue;
      if (expected < 0) {
        m.batch_stride = x.stride(d);
      } else if (x.stride(d) != expected) {
        return false;
      }
      expected = x.stride(d) * x.size(d);
    }
  }
  m.ptr = x.raw_data();
  return true;
}

}  // namespace

// ---- GEMM ------------------------------------------------------------------------------------

void matmul_into(const Tensor& a_in, const Tensor& b_in, Tensor& out, bool trans_a, bool trans_b, float alpha,
                 float beta, const Execution& ex) {
  profile::OpTimer timer("matmul");
  const char* op = "matmul";
  const auto [device, dtype] = check_matmul_operands(op, a_in, b_in, ex);
  KV_CHECK(a_in.dim() >= 2 && b_in.dim() >= 2, "matmul: operands must have at least 2 dims, got A{} B{}",
           a_in.shape(), b_in.shape());
  const int64_t m = trans_a ? a_in.size(-1) : a_in.size(-2);
  const int64_t k = trans_a ? a_in.size(-2) : a_in.size(-1);
  const int64_t kb = trans_b ? b_in.size(-1) : b_in.size(-2);
  const int64_t n = trans_b ? b_in.size(-2) : b_in.size(-1);
  KV_CHECK(k == kb, "matmul: inner dimensions differ: A{}{} has {} but B{}{} has {}", a_in.shape(),
           trans_a ? "^T" : "", k, b_in.shape(), trans_b ? "^T" : "", kb);
  Shape batch_shape(a_in.shape().begin(), a_in.shape().end() - 2);
  if (b_in.dim() > 2) {
    Shape b_batch(b_in.shape().begin(), b_in.shape().end() - 2);
    KV_CHECK(b_batch == batch_shape, "matmul: batch dimensions differ: A{} vs B{}", a_in.shape(), b_in.shape());
  }
  Shape out_shape = batch_shape;
  out_shape.push_back(m);
  out_shape.push_back(n);
  KV_CHECK(out.defined(), "matmul: output tensor is undefined");
  check_output(op, out, out_shape, device, out.dtype() == DType::F32 ? DType::F32 : dtype);
  const int64_t batch = shape_numel(batch_shape);
  if (out.numel() == 0) return;

  Tensor a = a_in, b = b_in;
  BlasMatrix ma, mb;
  if (!describe_matrix(a, trans_a, batch, ma)) {
    a = a.contiguous();
    describe_matrix(a, trans_a, batch, ma);
  }
  if (!describe_matrix(b, trans_b, batch, mb)) {
    b = b.contiguous();
    describe_matrix(b, trans_b, batch, mb);
  }
  if (b.dim() == 2) mb.batch_stride = 0;
  void* c = out.raw_data();

  int64_t gemm_m = m, gemm_batch = batch;
  // A shared 2-D B and a row-major A whose batch rows are contiguous: one tall GEMM.
  if (batch > 1 && mb.batch_stride == 0 && !ma.trans && ma.batch_stride == m * ma.ld) {
    gemm_m = m * batch;
    gemm_batch = 1;
  }
  if (device.is_cuda()) {
    cuda::gemm_batched(device.index, dtype, out.dtype(), ma.trans, mb.trans, gemm_m, n, k, alpha, ma.ptr, ma.ld,
                       ma.batch_stride, mb.ptr, mb.ld, mb.batch_stride, beta, c, n, gemm_m * n, gemm_batch);
  } else if (ex.cpu_bf16_gemm) {
    KV_CHECK(cpu::bf16_gemm_supported(), "matmul: {}", cpu_bf16_fallback_notice());
    cpu::gemm_batched_bf16(ma.trans, mb.trans, gemm_m, n, k, alpha,
                           {ma.ptr, a.dtype() == DType::BF16, ma.ld, ma.batch_stride},
                           {mb.ptr, b.dtype() == DType::BF16, mb.ld, mb.batch_stride}, beta, static_cast<float*>(c), n,
                           gemm_m * n, gemm_batch);
  } else if (cpu::f32_gemm_prefers_dnnl()) {
    cpu::gemm_batched_f32_dnnl(ma.trans, mb.trans, gemm_m, n, k, alpha, static_cast<const float*>(ma.ptr), ma.ld,
                               ma.batch_stride, static_cast<const float*>(mb.ptr), mb.ld, mb.batch_stride, beta,
                               static_cast<float*>(c), n, gemm_m * n, gemm_batch);
  } else {
    cpu::gemm_batched(ma.trans, mb.trans, gemm_m, n, k, alpha, static_cast<const float*>(ma.ptr), ma.ld,
                      ma.batch_stride, static_cast<const float*>(mb.ptr), mb.ld, mb.batch_stride, beta,
                      static_cast<float*>(c), n, gemm_m * n, gemm_batch);
  }
}

bool cpu_bf16_supported() { return cpu::bf16_gemm_supported(); }

std::string cpu_bf16_fallback_notice() {
  return fmt::format("this CPU has no bf16 instructions (oneDNN ISA {}; bf16 needs AVX512-BF16 or AMX): bf16 "
                     "falls back to f32 GEMMs",
                     cpu::cpu_isa_name());
}

std::string cpu_matmul_description(const Execution& ex) {
  if (ex.cpu_bf16_gemm) {
    return fmt::format("bf16 GEMMs via oneDNN {} (ISA {})", cpu::bf16_gemm_impl(), cpu::cpu_isa_name());
  }
  if (cpu::f32_gemm_prefers_dnnl()) {
    return fmt::format("f32 GEMMs via oneDNN {} (ISA {})", cpu::f32_gemm_impl(), cpu::cpu_isa_name());
  }
  return fmt::format("f32 GEMMs via OpenBLAS (ISA {})", cpu::cpu_isa_name());
}

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, DType out_dtype, const Execution& ex) {
  profile::OpTimer timer("matmul");
  check_matmul_operands("matmul", a, b, ex);
  KV_CHECK(a.dim() >= 2, "matmul: A must have at least 2 dims, got {}", a.str());
  KV_CHECK(b.dim() >= 2, "matmul: B must have at least 2 dims, got {}", b.str());
  Shape shape(a.shape().begin(), a.shape().end() - 2);
  shape.push_back(trans_a ? a.size(-1) : a.size(-2));
  shape.push_back(trans_b ? b.size(-2) : b.size(-1));
  Tensor out = Tensor::empty(shape, out_dtype, a.device());
  matmul_into(a, b, out, trans_a, trans_b, 1.0f, 0.0f, ex);
  return out;
}

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, const Execution& ex) {
  profile::OpTimer timer("matmul");
  KV_CHECK(a.defined(), "matmul: undefined tensor argument");
  // bf16 operands on the CPU (bf16 GEMMs) give an f32 result: the CPU's activations are f32.
  return matmul(a, b, trans_a, trans_b, a.device().is_cuda() ? a.dtype() : DType::F32, ex);
}

// ---- Element-wise ------------------------------------------------------------------------------

namespace {
void check_same_shape(const char* op, const Tensor& a, const Tensor& b) {
  KV_CHECK(a.shape() == b.shape(), "{}: shape mismatch {} vs {}", op, a.shape(), b.shape());
}
}  // namespace

void add_into(const Tensor& a, const Tensor& b, Tensor& out) {
  profile::OpTimer timer("add");
  const auto [device, dtype] = check_floats("add", {&a, &b});
  check_same_shape("add", a, b);
  check_output("add", out, a.shape(), device, dtype);
  Tensor ac = a.contiguous(), bc = b.contiguous();
  if (device.is_cuda()) {
    cuda::add(device.index, dtype, ac.raw_data(), bc.raw_data(), out.raw_data(), a.numel());
  } else {
    cpu::add(ac.data<float>(), bc.data<float>(), out.data<float>(), a.numel());
  }
}

void mul_into(const Tensor& a, const Tensor& b, Tensor& out) {
  profile::OpTimer timer("mul");
  const auto [device, dtype] = check_floats("mul", {&a, &b});
  check_same_shape("mul", a, b);
  check_output("mul", out, a.shape(), device, dtype);
  Tensor ac = a.contiguous(), bc = b.contiguous();
  if (device.is_cuda()) {
    cuda::mul(device.index, dtype, ac.raw_data(), bc.raw_data(), out.raw_data(), a.numel());
  } else {
    cpu::mul(ac.data<float>(), bc.data<float>(), out.data<float>(), a.numel());
  }
}

Tensor add(const Tensor& a, const Tensor& b) {
  profile::OpTimer timer("add");
  KV_CHECK(a.defined(), "add: undefined tensor argument");
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  add_into(a, b, out);
  return out;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  profile::OpTimer timer("mul");
  KV_CHECK(a.defined(), "mul: undefined tensor argument");
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  mul_into(a, b, out);
  return out;
}

Tensor scale(const Tensor& a, float s) {
  profile::OpTimer timer("scale");
  check_floats("scale", {&a});
  Tensor out = a.clone();
  scale_(out, s);
  return out;
}

void scale_(Tensor& a, float s) {
  profile::OpTimer timer("scale");
  const auto [device, dtype] = check_floats("scale", {&a});
  KV_CHECK(a.is_contiguous(), "scale: in-place operand {} must be contiguous", a.str());
  if (device.is_cuda()) {
    cuda::scale(device.index, dtype, a.raw_data(), s, a.numel());
  } else {
    cpu::scale(a.data<float>(), s, a.numel());
  }
}

void axpy_(float alpha, const Tensor& x, Tensor& y) {
  profile::OpTimer timer("axpy");
  check_floats("axpy", {&x});
  const auto [device, y_dtype] = check_floats("axpy", {&y});
  KV_CHECK(x.device() == device, "axpy: tensors on different devices ({} and {})", x.device(), device);
  KV_CHECK(x.dtype() == y_dtype || device.is_cuda(), "axpy: dtypes differ ({} and {})", x.str(), y.str());
  check_same_shape("axpy", x, y);
  KV_CHECK(y.is_contiguous(), "axpy: in-place operand {} must be contiguous", y.str());
  Tensor xc = x.contiguous();
  if (device.is_cuda()) {
    cuda::axpy(device.index, alpha, xc.dtype(), xc.raw_data(), y_dtype, y.raw_data(), x.numel());
  } else {
    cpu::axpy(alpha, xc.data<float>(), y.data<float>(), x.numel());
  }
}

// ---- Reductions --------------------------------------------------------------------------------

namespace {
double total(const char* op, const Tensor& a, bool squares) {
  const auto [device, dtype] = check_floats(op, {&a});
  Tensor ac = a.contiguous();
  if (device.is_cuda()) {
    return cuda::sum(device.index, dtype, ac.raw_data(), a.numel(), squares);
  } else {
    return squares ? cpu::sum_squares(ac.data<float>(), a.numel()) : cpu::sum(ac.data<float>(), a.numel());
  }
}
}  // namespace

Tensor sum(const Tensor& a) {
  profile::OpTimer timer("sum");
  return Tensor::scalar(static_cast<float>(total("sum", a, false)));
}

Tensor mean(const Tensor& a) {
  profile::OpTimer timer("sum");
  KV_CHECK(a.defined() && a.numel() > 0, "mean: empty tensor {}", a.str());
  return Tensor::scalar(static_cast<float>(total("mean", a, false) / static_cast<double>(a.numel())));
}

Tensor squared_norm(const Tensor& a) { return Tensor::scalar(static_cast<float>(squared_norm_f64(a))); }

double squared_norm_f64(const Tensor& a) {
  profile::OpTimer timer("squared_norm");
  if (a.defined() && a.numel() == 0) return 0.0;
  return total("squared_norm", a, true);
}

Tensor sum_last_dim(const Tensor& a) {
  profile::OpTimer timer("sum");
  const auto [device, dtype] = check_floats("sum_last_dim", {&a});
  KV_CHECK(a.dim() >= 1, "sum_last_dim: needs at least one dim, got {}", a.str());
  Tensor ac = a.contiguous();
  Shape shape(a.shape().begin(), a.shape().end() - 1);
  Tensor out = Tensor::empty(shape, DType::F32, device);
  if (device.is_cuda()) {
    cuda::sum_last_dim(device.index, dtype, ac.raw_data(), out.data<float>(), shape_numel(shape), a.size(-1));
  } else {
    cpu::sum_last_dim(ac.data<float>(), out.data<float>(), shape_numel(shape), a.size(-1));
  }
  return out;
}

// ---- Embedding ---------------------------------------------------------------------------------

Tensor embedding_forward(const Tensor& weight, const Tensor& tokens) {
  profile::OpTimer timer("embedding");
  const auto [device, dtype] = check_floats("embedding_forward", {&weight});
  KV_CHECK(weight.dim() == 2, "embedding_forward: weight must be [vocab, channels], got {}", weight.shape());
  Tensor ids = checked_tokens("embedding_forward", tokens, weight.size(0));
  Shape shape = tokens.shape();
  shape.push_back(weight.size(1));
  Tensor out = Tensor::empty(shape, dtype, device);
  Tensor w = weight.contiguous();
  if (device.is_cuda()) {
    cuda::embedding_forward(device.index, dtype, w.raw_data(), ids.data<int32_t>(), out.raw_data(), ids.numel(),
                            weight.size(1));
  } else {
    cpu::embedding_forward(w.data<float>(), ids.data<int32_t>(), out.data<float>(), ids.numel(), weight.size(1));
  }
  return out;
}

void embedding_backward(const Tensor& dout, const Tensor& tokens, Tensor& dweight) {
  profile::OpTimer timer("embedding");
  const char* op = "embedding_backward";
  const auto [device, dtype] = check_floats(op, {&dout});
  check_f32_operand(op, "dweight", dweight, device);
  KV_CHECK(dweight.dim() == 2 && dweight.is_contiguous(),
           "embedding_backward: dweight must be a contiguous [vocab, channels], got {}", dweight.str());
  Shape expected = tokens.shape();
  expected.push_back(dweight.size(1));
  KV_CHECK(dout.shape() == expected, "embedding_backward: dout {} does not match tokens {} x channels {}",
           dout.shape(), tokens.shape(), dweight.size(1));
  Tensor ids = checked_tokens(op, tokens, dweight.size(0));
  Tensor g = dout.contiguous();
  if (device.is_cuda()) {
    cuda::embedding_backward(device.index, dtype, g.raw_data(), ids.data<int32_t>(), dweight.data<float>(),
                             ids.numel(), dweight.size(1), dweight.size(0));
  } else {
    cpu::embedding_backward(g.data<float>(), ids.data<int32_t>(), dweight.data<float>(), ids.numel(),
                            dweight.size(1));
  }
}

// ---- RMSNorm -----------------------------------------------------------------------------------

void rms_norm_forward(const Tensor& x, const Tensor& weight, float eps, Tensor& out, Tensor& rstd) {
  profile::OpTimer timer("rms_norm");
  const char* op = "rms_norm_forward";
  const auto [device, dtype] = check_floats(op, {&x, &weight});
  KV_CHECK(x.dim() >= 1 && weight.dim() == 1 && weight.size(0) == x.size(-1),
           "rms_norm_forward: weight {} does not match the last dim of x {}", weight.shape(), x.shape());
  KV_CHECK(eps >= 0.0f, "rms_norm_forward: eps must be >= 0, got {}", eps);
  const int64_t channels = x.size(-1), rows = x.numel() / std::max<int64_t>(channels, 1);
  const bool out_bf16 = !device.is_cuda() && out.defined() && out.dtype() == DType::BF16;
  check_output(op, out, x.shape(), device, out_bf16 ? DType::BF16 : dtype);
  check_output(op, rstd, Shape{rows}, device);
  Tensor xc = x.contiguous(), wc = weight.contiguous();
  if (device.is_cuda()) {
    cuda::rms_norm_forward(device.index, dtype, xc.raw_data(), wc.raw_data(), eps, out.raw_data(),
                           rstd.data<float>(), rows, channels);
  } else {
    cpu::rms_norm_forward(xc.data<float>(), wc.data<float>(), eps, out_bf16 ? nullptr : out.data<float>(),
                          out_bf16 ? static_cast<uint16_t*>(out.raw_data()) : nullptr, rstd.data<float>(), rows,
                          channels);
  }
}

void rms_norm_backward(const Tensor& dout, const Tensor& x, const Tensor& weight, const Tensor& rstd, Tensor& dx,
                       Tensor& dweight) {
  profile::OpTimer timer("rms_norm");
  const char* op = "rms_norm_backward";
  const auto [device, dtype] = check_floats(op, {&dout, &x, &weight});
  check_f32_operand(op, "rstd", rstd, device);
  check_same_shape(op, dout, x);
  KV_CHECK(weight.dim() == 1 && weight.size(0) == x.size(-1),
           "rms_norm_backward: weight {} does not match the last dim of x {}", weight.shape(), x.shape());
  const int64_t channels = x.size(-1), rows = x.numel() / std::max<int64_t>(channels, 1);
  KV_CHECK(rstd.numel() == rows, "rms_norm_backward: rstd has {} values for {} rows", rstd.numel(), rows);
  check_output(op, dx, x.shape(), device, dtype);
  check_output(op, dweight, weight.shape(), device);
  Tensor gc = dout.contiguous(), xc = x.contiguous(), wc = weight.contiguous(), rc = rstd.contiguous();
  if (device.is_cuda()) {
    cuda::rms_norm_backward(device.index, dtype, gc.raw_data(), xc.raw_data(), wc.raw_data(), rc.data<float>(),
                            dx.raw_data(), dweight.data<float>(), rows, channels);
  } else {
    cpu::rms_norm_backward(gc.data<float>(), xc.data<float>(), wc.data<float>(), rc.data<float>(),
                           dx.data<float>(), dweight.data<float>(), rows, channels);
  }
}

// ---- RoPE --------------------------------------------------------------------------------------

namespace {
// Packed rows' [B, T] i32 index tensors (positions, key_begin): shape, dtype, host memory (both
// backends read it there; the CUDA kernels upload it, as they do token ids) and every value within
// [0, t] for token t. Returns the values contiguous.
Tensor checked_packed_index(const char* op, const char* name, const Tensor& index, int64_t batch, int64_t seq) {
  KV_CHECK(index.dim() == 2 && index.size(0) == batch && index.size(1) == seq && index.dtype() == DType::I32,
           "{}: {} must be i32 [{}, {}], got {} {}", op, name, batch, seq, index.dtype(), index.shape());
  KV_CHECK(!index.device().is_cuda(), "{}: {} must be in host memory (it is on {})", op, name, index.device().str());
  Tensor c = index.contiguous();
  const int32_t* v = c.data<int32_t>();
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t t = 0; t < seq; ++t) {
      const int32_t x = v[b * seq + t];
      KV_CHECK(x >= 0 && x <= t, "{}: {}[{}, {}] = {} is out of range [0, {}]", op, name, b, t, x, t);
    }
  }
  return c;
}

void rope_dispatch(const char* op, const Tensor& x, const RopeConfig& rope, int64_t position_offset, Tensor& out,
                   int sign, const Tensor& positions) {
  const auto [device, dtype] = check_floats(op, {&x});
  KV_CHECK(x.dim() == 4, "{}: expected [B, T, H, D], got {}", op, x.shape());
  KV_CHECK(x.size(3) % 2 == 0, "{}: head_dim must be even, got {} in {}", op, x.size(3), x.shape());
  KV_CHECK(rope.theta > 0.0, "{}: theta must be positive, got {}", op, rope.theta);
  KV_CHECK(rope.llama3_factor == 0.0 || (rope.llama3_factor > 0.0 && rope.high_freq_factor > rope.low_freq_factor &&
                                         rope.low_freq_factor > 0.0 && rope.original_max_position > 0.0),
           "{}: invalid llama3 rope scaling (factor {}, low_freq_factor {}, high_freq_factor {}, original {})", op,
           rope.llama3_factor, rope.low_freq_factor, rope.high_freq_factor, rope.original_max_position);
  KV_CHECK(position_offset >= 0, "{}: position_offset must be >= 0, got {}", op, position_offset);
  check_output(op, out, x.shape(), device, dtype);
  Tensor pc;
  if (positions.defined()) {
    KV_CHECK(position_offset == 0, "{}: positions are given, so position_offset must be 0, got {}", op,
             position_offset);
    pc = checked_packed_index(op, "positions", positions, x.size(0), x.size(1));
  }
  Tensor xc = x.contiguous();
  if (device.is_cuda()) {
    cuda::rope(device.index, dtype, xc.raw_data(), out.raw_data(), x.size(0), x.size(1), x.size(2), x.size(3), rope,
               position_offset, sign, pc.defined() ? pc.data<int32_t>() : nullptr);
  } else {
    cpu::rope(xc.data<float>(), out.data<float>(), x.size(0), x.size(1), x.size(2), x.size(3), rope,
              position_offset, sign, pc.defined() ? pc.data<int32_t>() : nullptr);
  }
}
}  // namespace

void rope_forward(const Tensor& x, const RopeConfig& rope, int64_t position_offset, Tensor& out,
                  const Tensor& positions) {
  profile::OpTimer timer("rope");
  rope_dispatch("rope_forward", x, rope, position_offset, out, +1, positions);
}

void rope_backward(const Tensor& dout, const RopeConfig& rope, int64_t position_offset, Tensor& dx,
                   const Tensor& positions) {
  profile::OpTimer timer("rope");
  rope_dispatch("rope_backward", dout, rope, position_offset, dx, -1, positions);
}

// ---- SwiGLU ------------------------------------------------------------------------------------

void swiglu_forward(const Tensor& gate, const Tensor& up, Tensor& out) {
  profile::OpTimer timer("swiglu");
  const char* op = "swiglu_forward";
  const auto [device, dtype] = check_floats(op, {&gate, &up});
  check_same_shape(op, gate, up);
  const bool out_bf16 = !device.is_cuda() && out.defined() && out.dtype() == DType::BF16;
  check_output(op, out, gate.shape(), device, out_bf16 ? DType::BF16 : dtype);
  Tensor gc = gate.contiguous(), uc = up.contiguous();
  if (device.is_cuda()) {
    cuda::swiglu_forward(device.index, dtype, gc.raw_data(), uc.raw_data(), out.raw_data(), gate.numel());
  } else {
    cpu::swiglu_forward(gc.data<float>(), uc.data<float>(), out_bf16 ? nullptr : out.data<float>(),
                        out_bf16 ? static_cast<uint16_t*>(out.raw_data()) : nullptr, gate.numel());
  }
}

void swiglu_backward(const Tensor& dout, const Tensor& gate, const Tensor& up, Tensor& dgate, Tensor& dup) {
  profile::OpTimer timer("swiglu");
  const char* op = "swiglu_backward";
  const auto [device, dtype] = check_floats(op, {&dout, &gate, &up});
  check_same_shape(op, gate, up);
  check_same_shape(op, dout, gate);
  const bool out_bf16 = !device.is_cuda() && dgate.defined() && dgate.dtype() == DType::BF16;
  check_output(op, dgate, gate.shape(), device, out_bf16 ? DType::BF16 : dtype);
  check_output(op, dup, gate.shape(), device, out_bf16 ? DType::BF16 : dtype);
  Tensor dc = dout.contiguous(), gc = gate.contiguous(), uc = up.contiguous();
  if (device.is_cuda()) {
    cuda::swiglu_backward(device.index, dtype, dc.raw_data(), gc.raw_data(), uc.raw_data(), dgate.raw_data(),
                          dup.raw_data(), gate.numel());
  } else if (out_bf16) {
    cpu::swiglu_backward_bf16(dc.data<float>(), gc.data<float>(), uc.data<float>(),
                              static_cast<uint16_t*>(dgate.raw_data()), static_cast<uint16_t*>(dup.raw_data()),
                              gate.numel());
  } else {
    cpu::swiglu_backward(dc.data<float>(), gc.data<float>(), uc.data<float>(), dgate.data<float>(),
                         dup.data<float>(), gate.numel());
  }
}

// ---- Attention ---------------------------------------------------------------------------------

const char* attention_kernel_name(AttentionKernel kernel) {
  switch (kernel) {
    case AttentionKernel::CudaCores: return "cuda_cores";
    case AttentionKernel::TensorCores: return "tensor_cores";
  }
  return "unknown";
}

AttentionKernel parse_attention_kernel(const std::string& name) {
  for (AttentionKernel kernel : {AttentionKernel::CudaCores, AttentionKernel::TensorCores}) {
    if (name == attention_kernel_name(kernel)) return kernel;
  }
  KV_FAIL("attention kernel '{}' is not one of cuda_cores, tensor_cores", name);
}

namespace {
AttentionShape attention_shape(const char* op, const Tensor& q, const Tensor& k, const Tensor& v) {
  KV_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4,
           "{}: expected q [B, Tq, Hq, D] and k, v [B, Tk, Hkv, D], got q{} k{} v{}", op, q.shape(), k.shape(),
           v.shape());
  KV_CHECK(k.shape() == v.shape(), "{}: k{} and v{} must have the same shape", op, k.shape(), v.shape());
  AttentionShape s{q.size(0), q.size(1), k.size(1), q.size(2), k.size(2), q.size(3)};
  KV_CHECK(k.size(0) == s.batch && k.size(3) == s.head_dim,
           "{}: batch or head_dim of k{} does not match q{}", op, k.shape(), q.shape());
  KV_CHECK(s.kv_heads > 0 && s.q_heads % s.kv_heads == 0,
           "{}: query heads {} must be a multiple of kv heads {} (q{} k{})", op, s.q_heads, s.kv_heads, q.shape(),
           k.shape());
  KV_CHECK(s.kv_len >= s.q_len, "{}: fewer keys ({}) than queries ({}): q{} k{}", op, s.kv_len, s.q_len,
           q.shape(), k.shape());
  KV_CHECK(!q.device().is_cuda() || cuda::attention_supports_head_dim(s.head_dim),
           "{}: head_dim {} is not supported by the CUDA attention kernel (8, 16, 32, 64 or 128)", op, s.head_dim);
  return s;
}

// Packed rows: checks key_begin and points the shape at its (contiguous) values; returns the
// tensor that owns them (undefined without packed rows).
Tensor packed_keys(const char* op, const Tensor& key_begin, AttentionShape& s) {
  if (!key_begin.defined()) return Tensor();
  KV_CHECK(s.q_len == s.kv_len, "{}: packed rows (key_begin) need as many keys as queries, got {} and {}", op,
           s.kv_len, s.q_len);
  Tensor c = checked_packed_index(op, "key_begin", key_begin, s.batch, s.q_len);
  s.key_begin = c.data<int32_t>();
  return c;
}

// CPU attention's tile products in bf16: with bf16 GEMMs, where the CPU has AVX512-BF16 (and for
// head_dim up to 512, the bf16 kernel's row buffer; larger heads keep the f32 tiles).
bool bf16_tiles(const Execution& ex, const AttentionShape& s) {
  return ex.cpu_bf16_gemm && s.head_dim <= 512 && cpu::bf16_attention_supported();
}
}  // namespace

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, float softmax_scale, Tensor& out,
                       Tensor& lse, const Execution& ex, const Tensor& key_begin) {
  profile::OpTimer timer("attention");
  const char* op = "attention_forward";
  // On the CPU, K/V may be bf16 with f32 queries: a bf16 KV cache (--precision bf16), read widened.
  const bool bf16_kv = !q.device().is_cuda() && q.defined() && q.dtype() == DType::F32 && k.defined() &&
                       k.dtype() == DType::BF16;
  if (bf16_kv) {
    KV_CHECK(v.defined() && v.dtype() == DType::BF16, "{}: k is bf16 but v is not ({})", op, v.str());
    KV_CHECK(k.device() == q.device() && v.device() == q.device(), "{}: tensors on different devices", op);
  }
  const auto [device, dtype] = bf16_kv ? check_floats(op, {&q}) : check_floats(op, {&q, &k, &v});
  AttentionShape s = attention_shape(op, q, k, v);
  check_output(op, out, q.shape(), device, dtype);
  check_output(op, lse, Shape{s.batch, s.q_heads, s.q_len}, device);
  const Tensor kb = packed_keys(op, key_begin, s);
  if (q.numel() == 0) return;
  // A prefix of a KV cache ([B, T_max, H, D] sliced along T) is read in place with a batch stride.
  auto cache_prefix = [&](const Tensor& t) {
    return !t.is_contiguous() && t.stride(3) == 1 && t.stride(2) == s.head_dim && t.stride(1) == s.kv_heads * s.head_dim &&
           k.stride(0) == t.stride(0);
  };
  Tensor qc = q.contiguous(), kc = k, vc = v;
  if (cache_prefix(k) && cache_prefix(v)) {
    s.kv_batch_stride = k.stride(0);
  } else {
    kc = k.contiguous();
    vc = v.contiguous();
  }
  if (device.is_cuda()) {
    cuda::attention_forward(device.index, dtype, s, ex.attention, qc.raw_data(), kc.raw_data(), vc.raw_data(),
                            softmax_scale, out.raw_data(), lse.data<float>());
  } else if (bf16_tiles(ex, s) && bf16_kv) {
    cpu::attention_forward_bf16_from_bf16_kv(s, qc.data<float>(), static_cast<const uint16_t*>(kc.raw_data()),
                                             static_cast<const uint16_t*>(vc.raw_data()), softmax_scale,
                                             out.data<float>(), lse.data<float>());
  } else if (bf16_tiles(ex, s)) {
    cpu::attention_forward_bf16(s, qc.data<float>(), kc.data<float>(), vc.data<float>(), softmax_scale,
                                out.data<float>(), lse.data<float>());
  } else if (bf16_kv) {
    cpu::attention_forward_bf16_kv(s, qc.data<float>(), static_cast<const uint16_t*>(kc.raw_data()),
                                   static_cast<const uint16_t*>(vc.raw_data()), softmax_scale, out.data<float>(),
                                   lse.data<float>());
  } else {
    cpu::attention_forward(s, qc.data<float>(), kc.data<float>(), vc.data<float>(), softmax_scale,
                           out.data<float>(), lse.data<float>());
  }
}

void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                        const Tensor& lse, float softmax_scale, Tensor& dq, Tensor& dk, Tensor& dv,
                        const Execution& ex, const Tensor& key_begin) {
  profile::OpTimer timer("attention");
  const char* op = "attention_backward";
  const auto [device, dtype] = check_floats(op, {&dout, &q, &k, &v, &out});
  check_f32_operand(op, "lse", lse, device);
  AttentionShape s = attention_shape(op, q, k, v);
  check_same_shape(op, dout, q);
  check_same_shape(op, out, q);
  KV_CHECK(lse.shape() == (Shape{s.batch, s.q_heads, s.q_len}), "{}: lse {} does not match q{}", op, lse.shape(),
           q.shape());
  check_output(op, dq, q.shape(), device, dtype);
  check_output(op, dk, k.shape(), device, dtype);
  check_output(op, dv, v.shape(), device, dtype);
  const Tensor kb = packed_keys(op, key_begin, s);
  if (q.numel() == 0) return;
  Tensor gc = dout.contiguous(), qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
  Tensor oc = out.contiguous(), lc = lse.contiguous();
  if (device.is_cuda()) {
    cuda::attention_backward(device.index, dtype, s, ex.attention, gc.raw_data(), qc.raw_data(), kc.raw_data(),
                             vc.raw_data(), oc.raw_data(), lc.data<float>(), softmax_scale, dq.raw_data(),
                             dk.raw_data(), dv.raw_data());
  } else if (bf16_tiles(ex, s)) {
    cpu::attention_backward_bf16(s, gc.data<float>(), qc.data<float>(), kc.data<float>(), vc.data<float>(),
                                 oc.data<float>(), lc.data<float>(), softmax_scale, dq.data<float>(),
                                 dk.data<float>(), dv.data<float>());
  } else {
    cpu::attention_backward(s, gc.data<float>(), qc.data<float>(), kc.data<float>(), vc.data<float>(),
                            oc.data<float>(), lc.data<float>(), softmax_scale, dq.data<float>(), dk.data<float>(),
                            dv.data<float>());
  }
}

// ---- Cross-entropy -----------------------------------------------------------------------------

namespace {

// Targets other than ignore_index (checked host ids): the gradient's 1/n_valid is needed before
// any row is processed.
int64_t count_scored(const Tensor& ids, int64_t ignore_index) {
  const int32_t* t = ids.data<int32_t>();
  int64_t n = 0;
  for (int64_t i = 0; i < ids.numel(); ++i) n += t[i] != ignore_index;
  return n;
}

}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index, Tensor* dlogits,
                     float grad_scale) {
  profile::OpTimer timer("cross_entropy");
  const char* op = "cross_entropy";
  const auto [device, dtype] = check_floats(op, {&logits});
  KV_CHECK(logits.dim() == 2, "cross_entropy: logits must be [N, V], got {}", logits.shape());
  KV_CHECK(targets.dim() == 1 && targets.size(0) == logits.size(0),
           "cross_entropy: targets {} do not match logits {}", targets.shape(), logits.shape());
  KV_CHECK(logits.size(1) > 0, "cross_entropy: empty vocabulary in logits {}", logits.shape());
  if (dlogits != nullptr) check_output(op, *dlogits, logits.shape(), device, dtype);
  Tensor ids = checked_tokens(op, targets, logits.size(1), ignore_index, true);
  // The targets are on the host anyway (range check): the valid rows are counted here, once, for
  // both backends (the gradient's 1/n_valid is needed before any row is processed).
  const int32_t* t = ids.data<int32_t>();
  const int64_t n_valid = count_scored(ids, ignore_index);
  Tensor x = logits.contiguous();
  double total_loss = 0.0;
  if (device.is_cuda()) {
    total_loss = cuda::cross_entropy(device.index, dtype, x.raw_data(), t, logits.size(0), logits.size(1),
                                     ignore_index, dlogits != nullptr ? dlogits->raw_data() : nullptr, grad_scale,
                                     n_valid);
  } else {
    total_loss = cpu::cross_entropy(x.data<float>(), t, logits.size(0), logits.size(1), ignore_index,
                                    dlogits != nullptr ? dlogits->data<float>() : nullptr, grad_scale, n_valid);
  }
  return Tensor::scalar(n_valid > 0 ? static_cast<float>(total_loss / static_cast<double>(n_valid)) : 0.0f);
}

Tensor linear_cross_entropy(const Tensor& h, const Tensor& weight, const Tensor& targets, int64_t ignore_index,
                            const Execution& ex, Tensor* dh, Tensor* dweight, float grad_scale) {
  const char* op = "linear_cross_entropy";
  const auto [device, dtype] = check_floats(op, {&h, &weight});
  KV_CHECK(h.dim() == 2 && weight.dim() == 2 && h.size(1) == weight.size(1),
           "linear_cross_entropy: h must be [N, H] and weight [V, H], got {} and {}", h.shape(), weight.shape());
  KV_CHECK(weight.size(0) > 0, "linear_cross_entropy: empty vocabulary in weight {}", weight.shape());
  KV_CHECK(targets.dim() == 1 && targets.size(0) == h.size(0),
           "linear_cross_entropy: targets {} do not match h {}", targets.shape(), h.shape());
  KV_CHECK((dh == nullptr) == (dweight == nullptr), "linear_cross_entropy: dh and dweight go together");
  if (dh != nullptr) {
    check_output(op, *dh, h.shape(), device, dtype);
    check_output(op, *dweight, weight.shape(), device, DType::F32);
  }
  if (device.is_cuda()) {
    Tensor logits = matmul(h, weight, false, true, ex);
    if (dh == nullptr) return cross_entropy(logits, targets, ignore_index);
    Tensor loss = cross_entropy(logits, targets, ignore_index, &logits, grad_scale);
    matmul_into(logits, weight, *dh, false, false, 1.0f, 0.0f, ex);
    matmul_into(logits, h, *dweight, true, false, 1.0f, 0.0f, ex);
    return loss;
  }
  // Not timed as one op: the kernel reports its GEMMs as matmul and the rest as cross_entropy.
  const int64_t rows = h.size(0), hidden = h.size(1), vocab = weight.size(0);
  Tensor ids = checked_tokens(op, targets, vocab, ignore_index, true);
  const int32_t* t = ids.data<int32_t>();
  const int64_t n_valid = count_scored(ids, ignore_index);
  const bool bf16 = ex.cpu_bf16_gemm;
  KV_CHECK(!bf16 || cpu::bf16_gemm_supported(), "linear_cross_entropy: {}", cpu_bf16_fallback_notice());
  // Rows per block: about 2M logits (8 MB), so a block stays in the last-level cache.
  // (128-512 rows measured alike at vocab 8192: bench/bench_ops.cpp --only linear_cross_entropy).
  const int64_t block_rows = std::max<int64_t>(64, (int64_t{1} << 21) / vocab);
  Tensor hc = h.contiguous(), wc = weight.contiguous();
  const double total = cpu::linear_cross_entropy(
      hc.data<float>(), wc.data<float>(), t, rows, hidden, vocab, ignore_index, grad_scale, n_valid, bf16,
      block_rows, dh != nullptr ? dh->data<float>() : nullptr, dweight != nullptr ? dweight->data<float>() : nullptr);
  return Tensor::scalar(n_valid > 0 ? static_cast<float>(total / static_cast<double>(n_valid)) : 0.0f);
}

// ---- AdamW -------------------------------------------------------------------------------------

void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWConfig& config, int64_t step,
                const std::vector<DecaySegment>& segments, Tensor* compute_copy) {
  profile::OpTimer timer("adamw");
  const char* op = "adamw_step";
  Device device = check_f32_same_device(op, {&param, &grad, &m, &v});
  for (const Tensor* t : std::initializer_list<const Tensor*>{&param, &grad, &m, &v}) {
    KV_CHECK(t->is_contiguous() && t->numel() == param.numel(),
             "adamw_step: param/grad/m/v must be contiguous with {} elements, got {}", param.numel(), t->str());
  }
  if (compute_copy != nullptr) {
    KV_CHECK(compute_copy->defined() && compute_copy->is_contiguous() && compute_copy->numel() == param.numel() &&
                 compute_copy->device() == device &&
                 (compute_copy->dtype() == DType::F32 || compute_copy->dtype() == DType::BF16),
             "adamw_step: the compute copy must be a contiguous f32/bf16 tensor of {} elements on {}, got {}",
             param.numel(), device, compute_copy->str());
  }
  KV_CHECK(step >= 1, "adamw_step: step must be >= 1 (bias correction), got {}", step);
  KV_CHECK(config.lr >= 0.0f && config.eps > 0.0f && config.beta1 >= 0.0f && config.beta1 < 1.0f &&
               config.beta2 >= 0.0f && config.beta2 < 1.0f && config.weight_decay >= 0.0f,
           "adamw_step: invalid hyper-parameters lr={} betas=({}, {}) eps={} weight_decay={}", config.lr,
           config.beta1, config.beta2, config.eps, config.weight_decay);
  int64_t covered = 0;
  for (const DecaySegment& seg : segments) {
    KV_CHECK(seg.offset == covered && seg.numel >= 0,
             "adamw_step: segments must tile the buffer in order; segment at offset {} (size {}) after {} elements",
             seg.offset, seg.numel, covered);
    covered += seg.numel;
  }
  KV_CHECK(covered == param.numel(), "adamw_step: segments cover {} of {} elements", covered, param.numel());
  if (device.is_cuda()) {
    // The compute copy is written by the kernel, in the same pass over the master weights.
    cuda::adamw(device.index, param.data<float>(), grad.data<float>(), m.data<float>(), v.data<float>(), param.numel(),
                config, step, segments.data(), static_cast<int64_t>(segments.size()),
                compute_copy != nullptr ? compute_copy->raw_data() : nullptr,
                compute_copy != nullptr ? compute_copy->dtype() : DType::F32);
  } else {
    cpu::adamw(param.data<float>(), grad.data<float>(), m.data<float>(), v.data<float>(), config, step,
               segments.data(), static_cast<int64_t>(segments.size()));
    if (compute_copy != nullptr) compute_copy->view(param.shape()).copy_(param);
  }
}

// ---- Casts -------------------------------------------------------------------------------------

Tensor cast(const Tensor& x, DType dtype) {
  profile::OpTimer timer("cast");
  KV_CHECK(x.defined(), "cast: undefined tensor");
  if (dtype == DType::BF16 && x.dtype() == DType::F32 && !x.device().is_cuda() && x.is_contiguous()) {
    // The GEMM operands' rounding, parallel over rows: bit-identical to Tensor::to.
    Tensor out = Tensor::empty(x.shape(), DType::BF16, x.device());
    const int64_t cols = x.dim() == 0 ? 1 : std::max<int64_t>(x.size(-1), 1);
    cpu::to_bf16(x.data<float>(), x.numel() / cols, cols, cols, 0, 1, static_cast<uint16_t*>(out.raw_data()));
    return out;
  }
  return x.to(dtype);
}

}  // namespace kvroute::ops
