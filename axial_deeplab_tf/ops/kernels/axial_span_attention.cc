// Fused CPU inference kernel of position-sensitive axial attention.
//
// For every batch row r, head n and query l it attends to the keys m with
// |m - l| <= radius that lie inside the axis, in one pass over a window held
// in registers and L1: the three similarity terms
//   s_c q_l.k_m + s_q q_l.r^q[o] + s_k k_m.r^k[o],   o = m - l + radius,
// their softmax over m, and the two retrieved outputs sum_m a_lm v_m and
// sum_m a_lm r^v[o]. Nothing of size [keys x queries] is written to memory,
// which is what makes the op fast on a CPU: the unfused graph moves each
// logits tensor through memory about a dozen times.
//
// Inference only (no gradient): the similarity batch norm enters as the
// per-head scales s_c, s_q, s_k (the shift is constant along the softmax
// axis and cancels); the caller folds the rest into q, k and v.

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace axial_deeplab {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::errors::InvalidArgument;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

REGISTER_OP("AxialSpanAttention")
    .Input("query: float")
    .Input("key: float")
    .Input("value: float")
    .Input("query_table: float")
    .Input("key_table: float")
    .Input("value_table: float")
    .Input("scale: float")
    .Output("content: float")
    .Output("positional: float")
    .Attr("radius: int >= 0")
    .Attr("sequence_major: bool = false")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle q, v;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &q));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 4, &v));
      DimensionHandle channels;
      TF_RETURN_IF_ERROR(
          c->Multiply(c->Dim(v, 2), c->Dim(v, 3), &channels));
      ShapeHandle out = c->MakeShape({c->Dim(q, 0), c->Dim(q, 1), channels});
      c->set_output(0, out);
      c->set_output(1, out);
      return ::tensorflow::OkStatus();
    })
    .Doc(R"doc(
Position-sensitive axial attention along one axis (inference, float32).

query, key: [rows, length, heads, key_depth] ([length, rows, ...] with
  sequence_major). value: [rows, length, heads, value_depth].
query_table, key_table: [2 * radius + 1, key_depth], or 0 rows for a term
  that is not used. value_table: [2 * radius + 1, value_depth] or 0 rows.
scale: [3, heads]: the content, query and key term scales.
content, positional: [rows, length, heads * value_depth] (same layout as
  query): sum_m a_lm v_m and sum_m a_lm r^v[m - l] (zeros without a value
  table).
)doc");

constexpr int kTile = 16;
// Offsets of the logits and channels of the outputs kept in registers at once.
constexpr int kOffsetBlock = 4;
constexpr int kChannelBlock = 8;
// Logit of a key outside the axis: exp(kMasked - peak) is exactly 0 next to
// any real key, and finite (no NaN) for a padding lane with no key.
constexpr float kMasked = -1e30f;

class AxialSpanAttentionOp : public OpKernel {
 public:
  explicit AxialSpanAttentionOp(OpKernelConstruction* context)
      : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("radius", &radius_));
    OP_REQUIRES_OK(context,
                   context->GetAttr("sequence_major", &sequence_major_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& query = context->input(0);
    const Tensor& key = context->input(1);
    const Tensor& value = context->input(2);
    const Tensor& query_table = context->input(3);
    const Tensor& key_table = context->input(4);
    const Tensor& value_table = context->input(5);
    const Tensor& scale = context->input(6);
    OP_REQUIRES(context, query.dims() == 4 && key.dims() == 4 &&
                             value.dims() == 4,
                InvalidArgument("query, key and value must have rank 4."));
    OP_REQUIRES(context, query.shape() == key.shape(),
                InvalidArgument("query and key shapes differ: ",
                                query.shape().DebugString(), " vs ",
                                key.shape().DebugString()));
    for (int axis = 0; axis < 3; ++axis) {
      OP_REQUIRES(context, value.dim_size(axis) == query.dim_size(axis),
                  InvalidArgument("value ", value.shape().DebugString(),
                                  " does not match query ",
                                  query.shape().DebugString()));
    }
    const int64_t rows = query.dim_size(sequence_major_ ? 1 : 0);
    const int64_t length = query.dim_size(sequence_major_ ? 0 : 1);
    const int64_t heads = query.dim_size(2);
    const int64_t key_depth = query.dim_size(3);
    const int64_t value_depth = value.dim_size(3);
    const int64_t table_rows = 2 * radius_ + 1;
    const bool use_query = query_table.dim_size(0) > 0;
    const bool use_key = key_table.dim_size(0) > 0;
    const bool use_value = value_table.dim_size(0) > 0;
    OP_REQUIRES(context, query_table.dims() == 2 && key_table.dims() == 2 &&
                             value_table.dims() == 2,
                InvalidArgument("The relative tables must have rank 2."));
    OP_REQUIRES(context,
                (!use_query || (query_table.dim_size(0) == table_rows &&
                                query_table.dim_size(1) == key_depth)) &&
                    (!use_key || (key_table.dim_size(0) == table_rows &&
                                  key_table.dim_size(1) == key_depth)) &&
                    (!use_value || (value_table.dim_size(0) == table_rows &&
                                    value_table.dim_size(1) == value_depth)),
                InvalidArgument("Relative tables must have 2 * radius + 1 = ",
                                table_rows, " rows and the head depth."));
    OP_REQUIRES(context, scale.dims() == 2 && scale.dim_size(0) == 3 &&
                             scale.dim_size(1) == heads,
                InvalidArgument("scale must be [3, heads], got ",
                                scale.shape().DebugString()));

    TensorShape out_shape = sequence_major_
                                ? TensorShape({length, rows, heads * value_depth})
                                : TensorShape({rows, length, heads * value_depth});
    Tensor* content = nullptr;
    Tensor* positional = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, out_shape, &content));
    OP_REQUIRES_OK(context,
                   context->allocate_output(1, out_shape, &positional));
    if (rows == 0 || length == 0 || heads == 0) return;

    const float* q = query.flat<float>().data();
    const float* k = key.flat<float>().data();
    const float* v = value.flat<float>().data();
    const float* s = scale.flat<float>().data();
    float* out = content->flat<float>().data();
    float* out_pos = positional->flat<float>().data();
    if (!use_value) {
      std::fill(out_pos, out_pos + positional->NumElements(), 0.0f);
    }
    // Tables transposed to [depth][table_rows]: the window of a query reads
    // a contiguous run of each depth row.
    // A missing table is zeros: its term adds nothing, and the inner loops
    // need no branches. Padded by kOffsetBlock rows (whole offset blocks).
    const int64_t table_stride = table_rows + kOffsetBlock;
    std::vector<float> rq_t(key_depth * table_stride, 0.0f);
    std::vector<float> rk_t(key_depth * table_stride, 0.0f);
    for (int64_t o = 0; o < table_rows; ++o) {
      for (int64_t d = 0; d < key_depth; ++d) {
        if (use_query) {
          rq_t[d * table_stride + o] =
              query_table.flat<float>()(o * key_depth + d);
        }
        if (use_key) {
          rk_t[d * table_stride + o] =
              key_table.flat<float>()(o * key_depth + d);
        }
      }
    }
    // Value table [row][channel], channels padded to whole channel blocks.
    const int64_t value_stride =
        (value_depth + kChannelBlock - 1) / kChannelBlock * kChannelBlock;
    std::vector<float> rv(table_rows * value_stride, 0.0f);
    if (use_value) {
      for (int64_t o = 0; o < table_rows; ++o) {
        for (int64_t c = 0; c < value_depth; ++c) {
          rv[o * value_stride + c] =
              value_table.flat<float>()(o * value_depth + c);
        }
      }
    }
    const int64_t radius = radius_;
    const bool seq = sequence_major_;
    // Position (r, l) -> index of its [heads, depth] vector.
    auto position = [rows, length, seq](int64_t r, int64_t l) {
      return seq ? l * rows + r : r * length + l;
    };

    // Each work item is one (row, head). Its queries are taken kTile at a
    // time, one SIMD lane each: for a key offset o (key m = l + o - radius)
    // the tile's keys are contiguous in the transposed key and value
    // buffers, so every step below is a vector operation over the lanes
    // with no horizontal reductions.
    auto work = [&](int64_t begin, int64_t end) {
      using Lanes = Eigen::Array<float, kTile, 1>;
      using ConstLanes = Eigen::Map<const Lanes>;
      const int64_t tiles = (length + kTile - 1) / kTile;
      const int64_t padded = tiles * kTile;
      // Key/value buffers hold positions -radius .. padded + radius - 1.
      // Plus kOffsetBlock: the last offset block may read past 2 * radius.
      const int64_t span_len = padded + 2 * radius + kOffsetBlock;
      // q scaled for the content term and for the query term, [depth][pos].
      std::vector<float> q_content(key_depth * padded, 0.0f);
      std::vector<float> q_query(key_depth * padded, 0.0f);
      std::vector<float> k_t(key_depth * span_len, 0.0f);
      std::vector<float> v_t(value_stride * span_len, 0.0f);
      // Key table scaled by this head's key-term scale, [depth][row].
      std::vector<float> rk_scaled(key_depth * table_stride, 0.0f);
      std::vector<float> tile_logits(table_stride * kTile);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t r = item / heads;
        const int64_t n = item % heads;
        const float s_content = s[n];
        const float s_query = s[heads + n];
        const float s_key = s[2 * heads + n];
        for (int64_t i = 0; i < key_depth * table_stride; ++i) {
          rk_scaled[i] = s_key * rk_t[i];
        }
        for (int64_t m = 0; m < length; ++m) {
          const int64_t base = position(r, m) * heads + n;
          const float* qm = q + base * key_depth;
          const float* km = k + base * key_depth;
          const float* vm = v + base * value_depth;
          for (int64_t d = 0; d < key_depth; ++d) {
            q_content[d * padded + m] = s_content * qm[d];
            q_query[d * padded + m] = s_query * qm[d];
            k_t[d * span_len + radius + m] = km[d];
          }
          for (int64_t c = 0; c < value_depth; ++c) {
            v_t[c * span_len + radius + m] = vm[c];
          }
        }
        for (int64_t tile = 0; tile < tiles; ++tile) {
          const int64_t l0 = tile * kTile;
          // Offsets with a key inside the axis for some lane of the tile.
          const int64_t o_lo = std::max<int64_t>(0, radius - (l0 + kTile - 1));
          const int64_t o_hi =
              std::min<int64_t>(2 * radius, radius + length - 1 - l0);
          const bool interior = l0 - radius >= 0 &&
                                l0 + kTile - 1 + radius <= length - 1;
          Lanes peak = Lanes::Constant(-std::numeric_limits<float>::max());
          // Offsets in blocks of kOffsetBlock: each depth row of q is loaded
          // once per block; the key windows of the block's offsets are
          // neighbouring (overlapping) loads of one key row.
          for (int64_t ob = o_lo; ob <= o_hi; ob += kOffsetBlock) {
            const int count = static_cast<int>(
                std::min<int64_t>(kOffsetBlock, o_hi - ob + 1));
            Lanes lanes[kOffsetBlock];
            for (int j = 0; j < kOffsetBlock; ++j) lanes[j].setZero();
            for (int64_t d = 0; d < key_depth; ++d) {
              const Lanes qd = ConstLanes(q_content.data() + d * padded + l0);
              const Lanes qq = ConstLanes(q_query.data() + d * padded + l0);
              const float* kd = k_t.data() + d * span_len + l0 + ob;
              const float* rkd = rk_scaled.data() + d * table_stride + ob;
              const float* rqd = rq_t.data() + d * table_stride + ob;
              for (int j = 0; j < kOffsetBlock; ++j) {
                lanes[j] += ConstLanes(kd + j) * (qd + rkd[j]) + rqd[j] * qq;
              }
            }
            for (int j = 0; j < count; ++j) {
              const int64_t o = ob + j;
              if (!interior) {
                for (int i = 0; i < kTile; ++i) {
                  const int64_t m = l0 + i + o - radius;
                  if (m < 0 || m >= length) lanes[j][i] = kMasked;
                }
              }
              Eigen::Map<Lanes>(tile_logits.data() + (o - o_lo) * kTile) =
                  lanes[j];
              peak = peak.max(lanes[j]);
            }
          }
          Lanes total = Lanes::Zero();
          for (int64_t o = o_lo; o <= o_hi; ++o) {
            Eigen::Map<Lanes> row(tile_logits.data() + (o - o_lo) * kTile);
            row = (row - peak).exp();
            total += row;
          }
          const Lanes inv = total.inverse();
          // Output channels in blocks of kChannelBlock, accumulated in
          // registers over the offsets (each weight row is loaded once per
          // block).
          for (int64_t cb = 0; cb < value_depth; cb += kChannelBlock) {
            const int count = static_cast<int>(
                std::min<int64_t>(kChannelBlock, value_depth - cb));
            Lanes acc[kChannelBlock], acc_pos[kChannelBlock];
            for (int j = 0; j < kChannelBlock; ++j) {
              acc[j].setZero();
              acc_pos[j].setZero();
            }
            const float* vb = v_t.data() + cb * span_len + l0;
            for (int64_t o = o_lo; o <= o_hi; ++o) {
              const Lanes p = ConstLanes(tile_logits.data() + (o - o_lo) * kTile);
              const float* rvo = rv.data() + o * value_stride + cb;
              for (int j = 0; j < kChannelBlock; ++j) {
                acc[j] += p * ConstLanes(vb + j * span_len + o);
                acc_pos[j] += p * rvo[j];
              }
            }
            const int64_t lanes_used = std::min<int64_t>(kTile, length - l0);
            for (int j = 0; j < count; ++j) {
              const Lanes a = acc[j] * inv;
              const Lanes ap = acc_pos[j] * inv;
              for (int64_t i = 0; i < lanes_used; ++i) {
                const int64_t index =
                    (position(r, l0 + i) * heads + n) * value_depth + cb + j;
                out[index] = a[i];
                if (use_value) out_pos[index] = ap[i];
              }
            }
          }
        }
      }
    };
    const int64_t window = std::min<int64_t>(length, 2 * radius + 1);
    const int64_t cost_per_item =
        length * window * (3 * key_depth + 2 * value_depth + 10);
    auto* threads = context->device()->tensorflow_cpu_worker_threads();
    ::tensorflow::Shard(threads->num_threads, threads->workers, rows * heads,
                        cost_per_item, work);
  }

 private:
  int64_t radius_;
  bool sequence_major_;
};

REGISTER_KERNEL_BUILDER(Name("AxialSpanAttention").Device(DEVICE_CPU),
                        AxialSpanAttentionOp);

}  // namespace axial_deeplab
