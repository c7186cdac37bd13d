// Qwen3Attention computes grouped-query attention by folding each KV head's query heads into rows (no repeated K and
// V) and RoPE with a roll and a signed sine. Checked in float64 against the textbook formulas written out here
// (rotate_half, repeat_interleave of K and V, one head at a time), for one, two and four query heads per KV head,
// with left padding, and through the KV cache (a 4-column prefill, then one token at a time). Also: RoPE by roll and
// RMSNorm by sum, each bit for bit against the formula it replaces.

using TorchSharp;
using Workbook.Model;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Workbook.Tests;

public class AttentionTests
{
    const int V = 50;

    static Qwen3ForCausalLM Model(int kvHeads) =>
        new(
            Qwen3Config.Tiny(V) with
            {
                NumAttentionHeads = 4,
                NumKeyValueHeads = kvHeads,
            },
            ScalarType.Float64,
            CPU,
            seed: 7 + kvHeads
        );

    static Tensor RotateHalf(Tensor x)
    {
        var half = x.shape[^1] / 2;
        return cat([-x.narrow(-1, half, half), x.narrow(-1, 0, half)], -1);
    }

    /// <summary>The textbook Qwen3 forward (transformers' modeling_qwen3.py, eager attention) from the model's own
    /// weights: logits [B, T, V].</summary>
    static Tensor Reference(Qwen3ForCausalLM m, Tensor ids, Tensor mask)
    {
        var c = m.Config;
        long B = ids.shape[0],
            T = ids.shape[1];
        int H = c.NumAttentionHeads,
            KV = c.NumKeyValueHeads,
            D = c.HeadDim;
        using Scalar zero = 0,
            blocked = double.NegativeInfinity;
        var pos = mask.cumsum(1).Minus(1).clamp_min(zero).to(ScalarType.Float64);
        // float32 frequencies, as transformers (and the model) keep them
        var invFreq = tensor(
            Enumerable.Range(0, D / 2).Select(i => (double)(float)(1 / Math.Pow(c.RopeTheta, 2.0 * i / D))).ToArray()
        );
        var freqs = pos.unsqueeze(-1) * invFreq;
        var emb = cat([freqs, freqs], -1).unsqueeze(1); // [B, 1, T, D]
        var allowed = ones(T, T, dtype: ScalarType.Bool).tril().unsqueeze(0) & mask.to(ScalarType.Bool).unsqueeze(1);
        allowed = allowed | eye(T, dtype: ScalarType.Bool).unsqueeze(0); // a padding query sees itself: no NaN rows
        var h = m.model.embed_tokens.forward(ids);
        foreach (var layer in m.model.layers)
        {
            var a = layer.self_attn;
            var x = layer.input_layernorm.forward(h);
            var q = a.q_norm.forward(a.q_proj.forward(x).view(B, T, H, D)).transpose(1, 2);
            var k = a.k_norm.forward(a.k_proj.forward(x).view(B, T, KV, D)).transpose(1, 2);
            var v = a.v_proj.forward(x).view(B, T, KV, D).transpose(1, 2);
            q = (q * emb.cos()).Plus(RotateHalf(q) * emb.sin());
            k = (k * emb.cos()).Plus(RotateHalf(k) * emb.sin());
            k = k.repeat_interleave(H / KV, dim: 1);
            v = v.repeat_interleave(H / KV, dim: 1);
            var heads = new List<Tensor>();
            for (int j = 0; j < H; j++)
            {
                var s = matmul(q.select(1, j), k.select(1, j).transpose(1, 2)).Over(Math.Sqrt(D));
                s = s.masked_fill(allowed.logical_not(), blocked);
                heads.Add(matmul(F.softmax(s, -1), v.select(1, j)));
            }
            h = h.Plus(a.o_proj.forward(stack(heads, 2).reshape(B, T, H * D)));
            h = h.Plus(layer.mlp.forward(layer.post_attention_layernorm.forward(h)));
        }
        return F.linear(m.model.norm.forward(h), m.LmHeadWeight);
    }

    /// <summary>The largest difference of two [B, T, V] logits over real tokens (padding queries are left out: the
    /// model spreads them over every key, the reference over themselves).</summary>
    static double MaxDiffOnRealTokens(Tensor got, Tensor want, Tensor mask)
    {
        using Scalar zero = 0;
        var pad = mask.to(ScalarType.Bool).unsqueeze(-1).logical_not();
        var a = got.masked_fill(pad, zero).contiguous().data<double>();
        var b = want.masked_fill(pad, zero).contiguous().data<double>();
        return a.Zip(b).Max(p => Math.Abs(p.First - p.Second));
    }

    static (Tensor Ids, Tensor Mask) LeftPadded()
    {
        int[][] rows =
        [
            [3, 7, 1, 9, 4, 12, 30],
            [11, 2, 41],
            [5, 8, 13, 21, 34],
        ];
        var (ids, mask, _) = PromptPadding.LeftPad(rows, 0);
        return (tensor(ids, [3, 7], dtype: ScalarType.Int64), tensor(mask, [3, 7], dtype: ScalarType.Int64));
    }

    [Theory]
    [InlineData(4)]
    [InlineData(2)]
    [InlineData(1)]
    public void Forward_matches_the_textbook_attention(int kvHeads)
    {
        using var _ = NewDisposeScope();
        using var ng = no_grad();
        var m = Model(kvHeads);
        var (ids, mask) = LeftPadded();
        var want = Reference(m, ids, mask);
        Assert.True(MaxDiffOnRealTokens(want, zeros_like(want), mask) > 0.01); // not a vacuous comparison
        var diff = MaxDiffOnRealTokens(m.Forward(ids, mask), want, mask);
        Assert.True(diff < 1e-12, $"kv_heads {kvHeads}: {diff}");
    }

    [Fact]
    public void A_mask_of_the_wrong_shape_is_refused_naming_it()
    {
        using var _ = NewDisposeScope();
        using var ng = no_grad();
        var m = Model(2);
        var (ids, mask) = LeftPadded();
        foreach (var bad in new[] { mask.reshape(-1), mask.narrow(1, 0, 6) })
        {
            var e = Assert.Throws<ArgumentException>(() => m.Forward(ids, bad));
            Assert.Contains("attention_mask must be [batch, past+current = 7]", e.Message);
            Assert.Contains($"got [{string.Join(",", bad.shape)}]", e.Message);
        }
    }

    /// <summary>Qwen3RMSNorm's composite path (bf16, or the fused kernels off) takes the mean of squares as a sum
    /// divided by the width, whose backward divides the [.., 1] gradient instead of a full-width copy of it: the
    /// output and the gradients of the input and the weight are those of Hugging Face's x·rsqrt(mean(x²) + eps)·w
    /// bit for bit, in float32 and bf16.</summary>
    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void Rms_norm_by_sum_is_bit_identical_to_the_mean(ScalarType dtype)
    {
        using var _ = NewDisposeScope();
        using var composite = FusedKernels.Suspend(); // the fused kernels are FusedKernelsTests
        const int D = 96;
        using var gen = new Generator(5);
        using var norm = new Qwen3RMSNorm(D, 1e-6, dtype, CPU);
        using (no_grad())
            norm.weight.copy_(randn([D], generator: gen).to(dtype));
        var g = randn([3, 7, D], generator: gen).to(dtype);
        (Tensor Y, Tensor Gx, Tensor Gw) Run(Func<Tensor, Tensor> f)
        {
            var x = TestData.Randn([3, 7, D], 6).to(dtype).requires_grad_(true);
            norm.weight.grad = null;
            var y = f(x);
            y.backward([g]);
            return (y.detach(), x.grad!.clone(), norm.weight.grad!.clone());
        }
        var got = Run(norm.forward);
        var want = Run(x =>
        {
            var xf = x.to(ScalarType.Float32);
            using Scalar two = 2,
                eps = 1e-6;
            return norm.weight * (xf * rsqrt(xf.pow(two).mean([-1L], keepdim: true).Plus(eps))).to(dtype);
        });
        Assert.True(got.Y.eq(want.Y).all().item<bool>());
        Assert.True(got.Gx.eq(want.Gx).all().item<bool>());
        Assert.True(got.Gw.eq(want.Gw).all().item<bool>());
        Assert.True(got.Gx.abs().max().to(ScalarType.Float32).item<float>() > 0); // not vacuous
        using (no_grad()) // the forward without autograd takes libtorch's mean itself
            Assert.True(norm.forward(TestData.Randn([3, 7, D], 6).to(dtype)).eq(want.Y).all().item<bool>());
    }

    /// <summary>The model's RoPE, x·cos + roll(x)·[−sin, sin] with sin taken on the half-width frequencies, gives the
    /// textbook x·cos + rotate_half(x)·sin (sin of the doubled frequencies) bit for bit in float32 and bf16, at
    /// positions up to 40,000: libtorch's sin must not depend on where an element sits in its tensor.</summary>
    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void Rope_by_roll_is_bit_identical_to_rotate_half(ScalarType dtype)
    {
        using var _ = NewDisposeScope();
        const int D = 128;
        using var gen = new Generator(3);
        var pos = randint(0, 40_000, [2, 1, 37, 1], dtype: ScalarType.Float32, generator: gen);
        var invFreq = tensor(Enumerable.Range(0, D / 2).Select(i => (float)(1 / Math.Pow(1e6, 2.0 * i / D))).ToArray());
        var freqs = pos * invFreq; // [2, 1, 37, D/2]
        var x = randn([2, 4, 37, D], generator: gen).to(dtype);
        var emb = cat([freqs, freqs], -1);
        var want = (x * emb.cos().to(dtype)).Plus(RotateHalf(x) * emb.sin().to(dtype));
        var half = freqs.sin();
        var sinSigned = cat([-half, half], -1).to(dtype);
        var got = (x * emb.cos().to(dtype)).Plus(x.roll(D / 2, -1) * sinSigned);
        Assert.True(got.eq(want).all().item<bool>());
        Assert.False(got.eq(x * emb.cos().to(dtype)).all().item<bool>()); // the sine term counts
    }

    [Theory]
    [InlineData(2)]
    [InlineData(1)]
    public void Decoding_through_the_cache_matches_the_textbook_forward(int kvHeads)
    {
        using var _ = NewDisposeScope();
        using var ng = no_grad();
        var m = Model(kvHeads);
        var (ids, mask) = LeftPadded();
        var want = Reference(m, ids, mask);
        // prefill four columns, then one token at a time: queries of one row against the cached keys
        using var cache = m.NewCache(3, 7);
        var steps = new List<Tensor> { m.Forward(ids.narrow(1, 0, 4), mask.narrow(1, 0, 4), cache: cache) };
        for (int t = 4; t < 7; t++)
            steps.Add(m.Forward(ids.narrow(1, t, 1), mask.narrow(1, 0, t + 1), cache: cache));
        var got = cat(steps, 1);
        var diff = MaxDiffOnRealTokens(got, want, mask);
        Assert.True(diff < 1e-12, $"kv_heads {kvHeads}: {diff}");
    }
}
