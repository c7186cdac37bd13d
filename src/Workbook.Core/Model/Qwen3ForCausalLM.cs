// Qwen3 decoder-only transformer with Hugging Face semantics (transformers' modeling_qwen3.py):
//  - pre-norm residual blocks: h += attn(input_layernorm(h)); h += mlp(post_attention_layernorm(h))
//  - RMSNorm computed in float32 and cast back before the weight multiply; per-head q_norm/k_norm BEFORE RoPE; in
//    float32 on the CPU one fused kernel each way (Util/FusedKernels.cs: the same formula, other summation order)
//  - rotate-half RoPE (theta over head_dim; in float32 on the CPU one fused kernel each way, the same bits),
//    grouped-query attention (query head j uses KV head j / (H/KV)),
//    scale 1/sqrt(head_dim), softmax in float32, additive causal + padding mask
//  - SwiGLU MLP down(silu(gate(x)) * up(x)); final norm; lm_head tied to embed_tokens or its own matrix
// Module fields carry the Hugging Face state-dict names (model.layers.0.self_attn.q_proj.weight, ...) so checkpoints
// load by name.
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Workbook.Model;

#pragma warning disable IDE1006 // field names are the Hugging Face state-dict keys

public sealed class Qwen3RMSNorm : nn.Module<Tensor, Tensor>
{
    public Parameter weight;

    // Scalars held by the module: an implicit one (x.pow(2), x + eps) is unreachable once its handle is read, and a GC
    // triggered by another thread (seeds train in parallel) may finalize it while the native call still reads it
    readonly Scalar two = 2,
        eps,
        dim;

    public Qwen3RMSNorm(long dim, double eps, ScalarType dtype, Device device)
        : base("Qwen3RMSNorm")
    {
        weight = new Parameter(ones(dim, dtype: dtype, device: device));
        this.eps = eps;
        epsValue = eps;
        this.dim = dim;
        RegisterComponents();
    }

    readonly double epsValue;

    public override Tensor forward(Tensor x)
    {
        // float32 on the CPU: one fused pass each way (Util/FusedKernels.cs), unless turned off
        if (FusedKernels.TryRmsNorm(x, weight, epsValue) is { } fused)
            return fused;
        using var scope = NewDisposeScope();
        // float32 at least (float64 for gradient checks)
        var xf = x.dtype == ScalarType.Float64 ? x : x.to(ScalarType.Float32);
        // under autograd, the mean of squares as a sum divided by the width: what libtorch's mean computes on the
        // CPU, bit for bit, but its backward divides the [.., 1] gradient instead of a full-width copy of it (6% of a
        // small model's elementwise time went to that division); without autograd one call does it (decoding)
        var squares = xf.pow(two);
        var meanSquare = is_grad_enabled()
            ? squares.sum(-1, keepdim: true).div(dim)
            : squares.mean([-1L], keepdim: true);
        var normed = xf * rsqrt(meanSquare.Plus(eps));
        return (weight * normed.to(x.dtype)).MoveToOuterDisposeScope();
    }
}

public sealed class Qwen3MLP : nn.Module<Tensor, Tensor>
{
    public Linear gate_proj,
        up_proj,
        down_proj;

    public Qwen3MLP(Qwen3Config c, ScalarType dtype, Device device)
        : base("Qwen3MLP")
    {
        gate_proj = nn.Linear(c.HiddenSize, c.IntermediateSize, hasBias: false, device: device, dtype: dtype);
        up_proj = nn.Linear(c.HiddenSize, c.IntermediateSize, hasBias: false, device: device, dtype: dtype);
        down_proj = nn.Linear(c.IntermediateSize, c.HiddenSize, hasBias: false, device: device, dtype: dtype);
        RegisterComponents();
    }

    internal readonly FrozenProjections Frozen = new();

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var gate = Frozen.Apply(gate_proj, 0, x);
        var up = Frozen.Apply(up_proj, 1, x);
        return Frozen.Apply(down_proj, 2, F.silu(gate) * up).MoveToOuterDisposeScope();
    }
}

/// <summary>Row-major copies of a module's projection weights (Wᵀ, [in, out]) while the weights are frozen (one
/// Generate call): oneMKL's x·Wᵀ from a contiguous Wᵀ took 15-50% less time at decoding's 64 rows than F.linear's
/// x·Wᵀ from W, and gave the same bits from 12 rows up at every shape tried on the AVX-512 machine (below that,
/// oneMKL's small-row kernels sum in another order): so only inputs of at least <see cref="FromRows"/> rows use
/// them (tests: FrozenProjectionsTests, which would fail on a CPU or BLAS where the bits differ; untested elsewhere).
/// Not thread-safe: one model, one thread at a time, as everywhere in the workbook.</summary>
internal sealed class FrozenProjections
{
    public const long FromRows = 16;
    Tensor?[]? wT;

    int depth; // nested freezes share the outermost one's copies

    public void Freeze(params Linear[] ps)
    {
        if (depth > 0)
        {
            depth++;
            return;
        }
        using var scope = NewDisposeScope(); // the views die here, not in a finalizer (see HeldScalars)
        var copies = ps.Select(p => p.weight!.detach().t().contiguous()).ToArray(); // a failure leaves none
        wT = copies.Select(t => (Tensor?)t.DetachFromDisposeScope()).ToArray();
        depth = 1;
    }

    public void Thaw()
    {
        if (depth == 0 || --depth > 0 || wT is null)
            return;
        foreach (var t in wT)
            t?.Dispose();
        wT = null;
    }

    /// <summary>Projection <paramref name="i"/>'s copy while frozen, else null (tests).</summary>
    internal Tensor? Copy(int i) => wT?[i];

    public Tensor Apply(Linear p, int i, Tensor x) =>
        wT is { } w && p.bias is null && !is_grad_enabled() && x.numel() >= FromRows * x.size(-1)
            ? x.matmul(w[i]!)
            : p.forward(x);
}

public sealed class Qwen3Attention : nn.Module
{
    public Linear q_proj,
        k_proj,
        v_proj,
        o_proj;
    public Qwen3RMSNorm q_norm,
        k_norm;
    readonly int heads,
        kvHeads,
        headDim;
    readonly Scalar scale; // held, not implicit: see Qwen3RMSNorm

    public Qwen3Attention(Qwen3Config c, ScalarType dtype, Device device)
        : base("Qwen3Attention")
    {
        heads = c.NumAttentionHeads;
        kvHeads = c.NumKeyValueHeads;
        headDim = c.HeadDim;
        scale = 1.0 / Math.Sqrt(headDim);
        q_proj = nn.Linear(c.HiddenSize, heads * headDim, hasBias: c.AttentionBias, device: device, dtype: dtype);
        k_proj = nn.Linear(c.HiddenSize, kvHeads * headDim, hasBias: c.AttentionBias, device: device, dtype: dtype);
        v_proj = nn.Linear(c.HiddenSize, kvHeads * headDim, hasBias: c.AttentionBias, device: device, dtype: dtype);
        o_proj = nn.Linear(heads * headDim, c.HiddenSize, hasBias: c.AttentionBias, device: device, dtype: dtype);
        q_norm = new Qwen3RMSNorm(headDim, c.RmsNormEps, dtype, device);
        k_norm = new Qwen3RMSNorm(headDim, c.RmsNormEps, dtype, device);
        RegisterComponents();
    }

    internal static ScalarType AccumulateType(ScalarType t) =>
        t == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;

    /// <summary>Rotate-half RoPE, x·cos + rotate_half(x)·sin with rotate_half(x) = [−x₂, x₁], as
    /// x·cos + roll(x)·sinSigned with roll(x) = [x₂, x₁] and sinSigned = [−sin, sin]: the same products bit for bit
    /// (negation is exact), one copy instead of a negation and a concatenation.</summary>
    Tensor Rope(Tensor x, Tensor cos, Tensor sinSigned) => (x * cos).Plus(x.roll(headDim / 2, -1) * sinSigned);

    /// <param name="h">[B, T, hidden]</param><param name="cos">[B, 1, T, head_dim]</param>
    /// <param name="sinSigned">[B, 1, T, head_dim]: sin with its first half negated (see <see cref="Rope"/>)</param>
    /// <param name="mask">additive float32 [B, 1, T, S]</param><param name="cache">the KV cache (or shared prefix),
    /// or null</param>
    public Tensor forward(Tensor h, Tensor cos, Tensor sinSigned, Tensor mask, IKVCache? cache, int layer)
    {
        using var scope = NewDisposeScope();
        long B = h.size(0),
            T = h.size(1);
        var q = q_norm.forward(Frozen.Apply(q_proj, 0, h).view(B, T, heads, headDim)).transpose(1, 2);
        var k = k_norm.forward(Frozen.Apply(k_proj, 1, h).view(B, T, kvHeads, headDim)).transpose(1, 2);
        var v = Frozen.Apply(v_proj, 2, h).view(B, T, kvHeads, headDim).transpose(1, 2);
        // float32 on the CPU: one fused pass each way, the composite's bits (Util/FusedKernels.cs), unless turned off
        (q, k) = FusedKernels.TryRope(q, k, cos, sinSigned) ?? (Rope(q, cos, sinSigned), Rope(k, cos, sinSigned));
        if (cache is not null)
            (k, v) = cache.Append(layer, k, v);
        // grouped-query attention without repeating K and V: the G query heads of a KV head (heads kv·G .. kv·G+G−1)
        // become G·T rows against that head's keys, so the cache is read in place (repeating it copied every cached
        // key and value on every decoding step: 19% of a B64 step at 160 positions)
        long G = heads / kvHeads,
            S = k.size(2);
        var acc = AccumulateType(q.dtype);
        var scores = matmul(q.reshape(B, kvHeads, G * T, headDim), k.transpose(2, 3)) * scale;
        var probs = F.softmax(scores.view(B, kvHeads, G, T, S).to(acc).Plus(mask.to(acc).unsqueeze(1)), -1).to(q.dtype);
        var ctx = matmul(probs.view(B, kvHeads, G * T, S), v)
            .view(B, heads, T, headDim)
            .transpose(1, 2)
            .reshape(B, T, heads * headDim);
        return Frozen.Apply(o_proj, 3, ctx).MoveToOuterDisposeScope();
    }

    internal readonly FrozenProjections Frozen = new();
}

public sealed class Qwen3DecoderLayer : nn.Module
{
    public Qwen3Attention self_attn;
    public Qwen3MLP mlp;
    public Qwen3RMSNorm input_layernorm,
        post_attention_layernorm;

    public Qwen3DecoderLayer(Qwen3Config c, ScalarType dtype, Device device)
        : base("Qwen3DecoderLayer")
    {
        self_attn = new Qwen3Attention(c, dtype, device);
        mlp = new Qwen3MLP(c, dtype, device);
        input_layernorm = new Qwen3RMSNorm(c.HiddenSize, c.RmsNormEps, dtype, device);
        post_attention_layernorm = new Qwen3RMSNorm(c.HiddenSize, c.RmsNormEps, dtype, device);
        RegisterComponents();
    }

    public Tensor forward(Tensor h, Tensor cos, Tensor sinSigned, Tensor mask, IKVCache? cache, int layer)
    {
        using var scope = NewDisposeScope();
        h = h.Plus(self_attn.forward(input_layernorm.forward(h), cos, sinSigned, mask, cache, layer));
        h = h.Plus(mlp.forward(post_attention_layernorm.forward(h)));
        return h.MoveToOuterDisposeScope();
    }
}

public sealed class Qwen3Model : nn.Module
{
    public Embedding embed_tokens;
    public ModuleList<Qwen3DecoderLayer> layers;
    public Qwen3RMSNorm norm;

    public Qwen3Model(Qwen3Config c, ScalarType dtype, Device device)
        : base("Qwen3Model")
    {
        embed_tokens = nn.Embedding(c.VocabSize, c.HiddenSize, device: device, dtype: dtype);
        layers = nn.ModuleList(
            Enumerable.Range(0, c.NumHiddenLayers).Select(_ => new Qwen3DecoderLayer(c, dtype, device)).ToArray()
        );
        norm = new Qwen3RMSNorm(c.HiddenSize, c.RmsNormEps, dtype, device);
        RegisterComponents();
    }
}

/// <summary>The causal language model. <see cref="Forward"/> returns logits [B, T, V] (or [B, V] with
/// lastOnly).</summary>
public sealed class Qwen3ForCausalLM : nn.Module
{
    public Qwen3Model model;
    public Linear? lm_head; // null when tied: logits use model.embed_tokens.weight

    public Qwen3Config Config { get; }
    public ScalarType DType { get; }
    public Device Device { get; }
    readonly Tensor invFreq; // float32 [head_dim/2], not a parameter

    /// <param name="initialize">false: skip <see cref="InitWeights"/> (the weights are about to be read from a file:
    /// Checkpoint.Load)</param>
    public Qwen3ForCausalLM(
        Qwen3Config config,
        ScalarType dtype = ScalarType.Float32,
        Device? device = null,
        long? seed = null,
        bool initialize = true
    )
        : base("Qwen3ForCausalLM")
    {
        config.Validate();
        Memory.ForLargeModel(config.ParameterCount());
        Config = config;
        DType = dtype;
        Device = device ?? CPU;
        using (no_grad())
        {
            model = new Qwen3Model(config, dtype, Device);
            if (!config.TieWordEmbeddings)
                lm_head = nn.Linear(config.HiddenSize, config.VocabSize, hasBias: false, device: Device, dtype: dtype);
        }
        RegisterComponents();
        Memory.CheckHugePages();
        using (var scope = NewDisposeScope()) // holds the temporaries: one a GC finalizes mid-call is freed memory
        {
            using Scalar first = 0,
                headDim = config.HeadDim,
                two = 2,
                one = 1.0; // named: see Qwen3RMSNorm
            var exps = arange(first, headDim, two, dtype: ScalarType.Float64) / headDim;
            invFreq = (one / pow(config.RopeTheta, exps)).to(ScalarType.Float32).to(Device).DetachFromDisposeScope();
        }
        if (initialize)
            InitWeights(seed);
    }

    /// <summary>HF initialisation: every matrix N(0, initializer_range), norms 1. Deterministic given the
    /// seed.</summary>
    public void InitWeights(long? seed)
    {
        var gen = seed is { } s ? new Generator((ulong)s) : null;
        using var _ = no_grad();
        // torch.normal(mean, std) is randn * std + mean with implicit Scalars, which the GC may finalize while the
        // native call reads them ("Expected false to be true" in toFloat): the same arithmetic with named Scalars
        using Scalar std = Config.InitializerRange,
            mean = 0.0,
            one = 1.0;
        foreach (var (name, p) in named_parameters())
        {
            if (p.dim() == 2)
            {
                // scaled in place, the same arithmetic as out of place: one temporary of the matrix's size, not three
                // (a 0.6B embedding's three were 1.9 GB at once)
                using var w = randn(p.shape, dtype: ScalarType.Float32, generator: gen);
                w.mul_(std).add_(mean, HeldScalars.One);
                // copy_ converts the dtype itself; an undisposed w.to(p.dtype) aliased w and kept every matrix's
                // random draw alive until the GC ran (2.3 GB at 0.6B scale)
                p.copy_(w);
            }
            else if (name.EndsWith("norm.weight") || name.EndsWith("layernorm.weight"))
                p.fill_(one);
            else
                p.zero_();
        }
        gen?.Dispose();
    }

    public Tensor LmHeadWeight => lm_head?.weight ?? model.embed_tokens.weight!;

    /// <summary>Projection weights (elements, all layers) up to which <see cref="FreezeProjections"/> copies them: the
    /// copies cost memory and a pass over the weights per call, measured as a gain only on small float32 models on the
    /// CPU (the main job's).</summary>
    public const long FreezeUpTo = 1L << 24;

    /// <summary>Whether <see cref="FreezeProjections"/> makes copies: float32 on the CPU, projections of at most
    /// <see cref="FreezeUpTo"/> elements, no bias.</summary>
    public bool FreezesProjections => FreezesProjectionsFor(Config, DType, Device);

    /// <inheritdoc cref="FreezesProjections"/>
    public static bool FreezesProjectionsFor(Qwen3Config c, ScalarType dtype, Device device) =>
        dtype == ScalarType.Float32
        && device.type == DeviceType.CPU
        && !c.AttentionBias
        && (long)c.NumHiddenLayers
            * c.HiddenSize
            * (2L * c.NumAttentionHeads * c.HeadDim + 2L * c.NumKeyValueHeads * c.HeadDim + 3L * c.IntermediateSize)
            <= FreezeUpTo;

    /// <summary>Whether <see cref="FreezeProjections"/>' copies exist now (every layer's, or none).</summary>
    public bool ProjectionsFrozen =>
        model
            .layers.Cast<Qwen3DecoderLayer>()
            .All(l => l.mlp.Frozen.Copy(0) is not null && l.self_attn.Frozen.Copy(0) is not null);

    /// <summary>Holds row-major copies of the layers' projection weights until disposed (<see
    /// cref="FrozenProjections"/>): for a run of no-grad forwards with unchanged weights, such as one Generate call.
    /// </summary>
    public IDisposable FreezeProjections()
    {
        if (!FreezesProjections)
            return new Restore(() => { });
        var frozen = new List<FrozenProjections>();
        void ThawAll()
        {
            foreach (var f in frozen)
                f.Thaw();
        }
        try
        {
            using (no_grad())
                foreach (var layer in model.layers.Cast<Qwen3DecoderLayer>())
                {
                    var a = layer.self_attn;
                    a.Frozen.Freeze(a.q_proj, a.k_proj, a.v_proj, a.o_proj);
                    frozen.Add(a.Frozen);
                    layer.mlp.Frozen.Freeze(layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj);
                    frozen.Add(layer.mlp.Frozen);
                }
        }
        catch
        {
            ThawAll(); // a failure part way (out of memory) leaves no layer with copies the next training step outdates
            throw;
        }
        return new Restore(ThawAll);
    }

    /// <summary>Head size (vocabulary × hidden) from which a decoding step computes its logits as W·hᵀ (see
    /// <see cref="Forward"/>); below it, h·Wᵀ as in training.</summary>
    public const long BigHead = 1L << 24;

    /// <summary>
    /// Forward pass. <paramref name="attentionMask"/> is [B, past+T] with 1 for real tokens and 0 for padding (left
    /// padding for generation); <paramref name="positionIds"/> defaults to the count of real tokens before each
    /// position. With a
    /// <paramref name="cache"/>, keys/values of this call are appended and attention covers the cached prefix.
    /// <paramref name="headThreads"/>: threads for a one-row decoding step's head (<see cref="StreamedLogits"/>;
    /// 0: this thread's torch threads).
    /// </summary>
    public Tensor Forward(
        Tensor inputIds,
        Tensor? attentionMask = null,
        Tensor? positionIds = null,
        IKVCache? cache = null,
        bool lastOnly = false,
        Tensor? segmentIds = null,
        int headThreads = 0
    )
    {
        using var scope = NewDisposeScope();
        var h = HiddenStates(inputIds, attentionMask, positionIds, cache, segmentIds);
        if (lastOnly)
            h = h.select(1, -1);
        // a decoding step multiplies a few rows by the whole head. In float32, oneMKL repacks Wᵀ on every h·Wᵀ call,
        // which at a full vocabulary cost most of the step (B8: 69% of it); W·hᵀ streams W as stored. bf16 goes to
        // other kernels, where h·Wᵀ measured faster, and small heads (the main job's) keep their numbers bit for bit
        var logits =
            lastOnly && StreamsHead
                ? StreamedLogits(LmHeadWeight, h, headThreads > 0 ? headThreads : get_num_threads())
                : Logits(h);
        return logits.MoveToOuterDisposeScope();
    }

    /// <summary>Whether a decoding step takes its logits as W·hᵀ (<see cref="StreamedLogits"/>): a float32 head of
    /// at least <see cref="BigHead"/> entries.</summary>
    public bool StreamsHead => DType == ScalarType.Float32 && (long)Config.VocabSize * Config.HiddenSize >= BigHead;

    /// <summary>A decoding step's logits W·hᵀ ([rows, V]) for a head W [V, hidden] and hidden states h [rows,
    /// hidden]. One row is a matrix-vector product, which oneMKL runs on one thread (measured: the same time with one
    /// torch thread or two), so without autograd on the CPU the head's rows are split into
    /// <paramref name="threads"/> blocks computed at once on .NET threads: each logit is its own dot product, so the
    /// logits are bit for bit those of one call (GoldenModelTests), at about half the time on two cores.</summary>
    public static Tensor StreamedLogits(Tensor w, Tensor h, int threads)
    {
        using var scope = NewDisposeScope();
        long vocab = w.size(0);
        // blocks of whole 64-row groups, so a block's rows meet oneMKL's kernels as they do in the single call
        long block = Math.Max(64, (vocab / Math.Max(threads, 1) + 63) / 64 * 64);
        var ht = h.t();
        if (h.size(0) != 1 || threads < 2 || block >= vocab || w.device_type != DeviceType.CPU || is_grad_enabled())
            return w.matmul(ht).t().contiguous().MoveToOuterDisposeScope();
        var logits = empty([vocab, 1], dtype: w.dtype, device: w.device);
        var blocks = Enumerable
            .Range(0, (int)((vocab + block - 1) / block))
            .Select(i => (Start: i * block, Length: Math.Min(block, vocab - i * block)))
            .Select(b => (W: w.narrow(0, b.Start, b.Length), Out: logits.narrow(0, b.Start, b.Length)))
            .ToArray(); // made here: the views live in this scope, the workers only compute into them
        Parallel.For(
            0,
            blocks.Length,
            new ParallelOptions { MaxDegreeOfParallelism = threads },
            i =>
            {
                using var noGrad = no_grad(); // grad mode is per thread
                using var one = OneTorchThread.OnThisThread(); // a block is one thread's, whatever the pool's count
                using var workerScope = NewDisposeScope();
                blocks[i].Out.addmm_(blocks[i].W, ht, beta: 0f, alpha: 1f);
            }
        );
        return logits.t().contiguous().MoveToOuterDisposeScope();
    }

    /// <summary>lm_head on final hidden states [.., hidden] (as <see cref="HiddenStates"/> returns them). Inside
    /// <see cref="ForBackward"/> a big tied head adds its weight gradient into .grad in place (<see cref="TiedHead"/>).
    /// </summary>
    public Tensor Logits(Tensor h) =>
        lm_head is null && LookupIntoGrad()
            ? TiedHead.apply(embedWeight ??= new(model.embed_tokens), h, Anchor)
            : F.linear(h, LmHeadWeight);

    /// <summary>Bytes of float32 logits per chunk of positions in <see cref="FusedLogProbs"/>. Settable for tests.
    /// </summary>
    public long LogProbChunkBytes { get; set; } = LogProbHead.ChunkBytes;

    /// <summary>Whether <see cref="FusedLogProbs"/> applies: inside <see cref="ForBackward"/>, for a big tied head.
    /// </summary>
    public bool FusesLogProbs => lm_head is null && LookupIntoGrad();

    /// <summary>Whether <see cref="FusesLogProbs"/> will hold inside <see cref="ForBackward"/> (with gradients on).
    /// </summary>
    public bool FusesLogProbsInBackward =>
        lm_head is null
        && (long)Config.VocabSize * Config.HiddenSize >= LookupIntoGradFrom
        && model.embed_tokens.weight!.requires_grad;

    /// <summary>The log-probabilities of <paramref name="targets"/> [N, C] after final hidden states
    /// <paramref name="h"/> [N, C, hidden] at <paramref name="temperature"/>, and their entropies when asked: the
    /// head and log-softmax a few positions at a time (<see cref="LogProbHead"/>). Only where
    /// <see cref="FusesLogProbs"/>.</summary>
    public (Tensor LogProbs, Tensor? Entropy) FusedLogProbs(Tensor h, Tensor targets, double temperature, bool entropy)
    {
        if (!FusesLogProbs)
            throw new InvalidOperationException(
                "fused log-probabilities: only inside ForBackward, for a big tied head"
            );
        var call = new LogProbHead.Call(
            embedWeight ??= new(model.embed_tokens),
            temperature,
            entropy,
            LogProbHead.Chunk(Config.VocabSize, LogProbChunkBytes)
        );
        var lp = LogProbHead.apply(call, h, targets, Anchor);
        return (lp, call.Entropy);
    }

    /// <summary>Final hidden states [B, T, hidden] (after the final norm): the input of lm_head.
    /// <paramref name="segmentIds"/> [B, T] (packed rows, no cache): a token only attends to earlier tokens of its own
    /// segment.</summary>
    public Tensor HiddenStates(
        Tensor inputIds,
        Tensor? attentionMask = null,
        Tensor? positionIds = null,
        IKVCache? cache = null,
        Tensor? segmentIds = null
    )
    {
        using var scope = NewDisposeScope();
        if (inputIds.dim() != 2)
            throw new ArgumentException($"input_ids must be [batch, seq], got [{string.Join(",", inputIds.shape)}]");
        long B = inputIds.size(0),
            T = inputIds.size(1),
            past = cache?.Length ?? 0,
            S = past + T;
        var dev = Device;
        Tensor keyMask = attentionMask is null
            ? ones(B, S, dtype: ScalarType.Bool, device: dev)
            : attentionMask.to(ScalarType.Bool).to(dev);
        if (keyMask.dim() != 2 || keyMask.size(1) != S)
            throw new ArgumentException(
                $"attention_mask must be [batch, past+current = {S}], got [{string.Join(",", keyMask.shape)}]"
            );
        using Scalar minusOne = -1,
            zero = 0; // named: see Qwen3RMSNorm
        positionIds ??= (keyMask.to(ScalarType.Int64).cumsum(1).Plus(minusOne)).clamp_min(zero).narrow(1, past, T);
        positionIds = positionIds.to(dev);

        // RoPE tables [B, 1, T, head_dim] in float32, cast to the compute dtype (as transformers does).
        var freqs =
            positionIds.to(Qwen3Attention.AccumulateType(DType)).unsqueeze(-1)
            * invFreq.to(Qwen3Attention.AccumulateType(DType));
        var sinHalf = freqs.sin();
        var cos = cat([freqs, freqs], -1).cos().unsqueeze(1).to(DType);
        var sinSigned = cat([-sinHalf, sinHalf], -1).unsqueeze(1).to(DType); // Qwen3Attention.Rope

        // Additive mask [B, 1, T, S]: query i (absolute past+i) sees key j <= past+i that is not padding.
        using Scalar from = past,
            to = S; // named: see above
        Tensor allowed;
        if (T == 1) // a decoding step: its one query comes after every key, so only padding is masked
            allowed = keyMask.unsqueeze(1).unsqueeze(1);
        else
        {
            var qi = arange(from, to, HeldScalars.One, device: dev).unsqueeze(1);
            var kj = arange(zero, to, HeldScalars.One, device: dev).unsqueeze(0);
            allowed = kj.le(qi).unsqueeze(0).unsqueeze(0) & keyMask.unsqueeze(1).unsqueeze(1);
        }
        if (segmentIds is not null)
        {
            if (past != 0)
                throw new ArgumentException("segment ids (packing) cannot be combined with a KV cache");
            var seg = segmentIds.to(dev);
            allowed = allowed & seg.unsqueeze(2).eq(seg.unsqueeze(1)).unsqueeze(1);
        }
        // a named Scalar: an implicit one is unreachable once its handle is read, and the GC may finalize it while the
        // native call still reads it (seen as a garbage fill value, "Expected false to be true" in toFloat)
        using Scalar blocked = -1e30f;
        var mask = zeros(allowed.shape, dtype: ScalarType.Float32, device: dev)
            .masked_fill(allowed.logical_not(), blocked);
        GC.KeepAlive(blocked);

        var h = LookupIntoGrad()
            ? EmbeddingLookupIntoGrad.apply(embedWeight ??= new(model.embed_tokens), inputIds.to(dev), Anchor)
            : model.embed_tokens.forward(inputIds.to(dev));
        // gradient checkpointing needs a graph to hang the recomputation on (h from a trained embedding)
        bool checkpoint = GradientCheckpointing && forBackward && cache is null && is_grad_enabled() && h.requires_grad;
        for (int i = 0; i < model.layers.Count; i++)
            h = checkpoint
                ? CheckpointedLayer.apply(new CheckpointedLayer.Call(model.layers[i], i, this), h, cos, sinSigned, mask)
                : model.layers[i].forward(h, cos, sinSigned, mask, cache, i);
        cache?.Advance(T);
        return model.norm.forward(h).MoveToOuterDisposeScope();
    }

    /// <summary>Inside <see cref="ForBackward"/>, without a KV cache: each decoder layer keeps only its input and runs
    /// again in the backward (<see cref="CheckpointedLayer"/>; TRL's gradient_checkpointing). Set by the trainers from
    /// their options.</summary>
    public bool GradientCheckpointing { get; set; }

    /// <summary>Called at the start of each checkpointed layer's backward; tests use it to inject a failure.</summary>
    public Action? BeforeCheckpointBackward { get; set; }

    Exception? checkpointError;

    /// <summary>Keeps the first failure of a checkpointed layer's backward, thrown when <see cref="ForBackward"/>'s
    /// scope closes.</summary>
    internal void BackwardFailed(Exception e) => checkpointError ??= e;

    bool forBackward;
    EmbeddingLookupIntoGrad.Weight? embedWeight;
    Tensor? anchor; // null when RegisterComponents runs, so not registered as a buffer

    Tensor Anchor => anchor ??= zeros(1, device: Device).requires_grad_(true).DetachFromDisposeScope();

    /// <summary>Embeddings of at least this many elements (vocabulary × hidden) get the in-place lookup gradient of
    /// <see cref="ForBackward"/>, and the head's too when it is tied. Settable for tests.</summary>
    public long LookupIntoGradFrom { get; set; } = BigHead;

    /// <summary>
    /// Marks the forwards made until the returned scope is disposed as ones whose loss goes to loss.backward(), so
    /// that a big embedding's lookup (and its head, when tied) add their gradients into the weight's .grad in place
    /// instead of making dense vocabulary-sized ones (<see cref="EmbeddingLookupIntoGrad"/>, <see cref="TiedHead"/>;
    /// 622 MB each at 0.6B scale). Never around a forward differentiated by autograd.grad, which would see no path to
    /// the embedding. The gradients agree with the plain ones to rounding (tested); small models are unaffected. With
    /// <see cref="GradientCheckpointing"/>, the decoder layers are checkpointed in these forwards too.
    /// </summary>
    /// <remarks>A failure inside these backwards (out of memory, say) cannot cross libtorch's engine without ending
    /// the process: it leaves the gradients incomplete and is thrown when the scope closes, so close it before the
    /// optimizer step.</remarks>
    public IDisposable ForBackward()
    {
        var before = forBackward;
        forBackward = true;
        return new Restore(() =>
        {
            forBackward = before;
            // both cleared before either is thrown: a kept error must not surface again at the next scope's close
            var (lookup, layer) = (embedWeight?.Error, checkpointError);
            if (embedWeight is not null)
                embedWeight.Error = null;
            checkpointError = null;
            if (lookup is not null)
                throw new WorkbookException($"the tied embedding's in-place backward failed: {lookup.Message}", lookup);
            if (layer is not null)
                throw new WorkbookException($"a checkpointed layer's backward failed: {layer.Message}", layer);
        });
    }

    /// <summary>Called at the start of the in-place lookup's and head's backwards; tests use it to inject a failure.
    /// </summary>
    public Action? BeforeLookupBackward
    {
        set => (embedWeight ??= new(model.embed_tokens)).BeforeBackward = value;
    }

    sealed class Restore(Action undo) : IDisposable
    {
        bool done;

        public void Dispose()
        {
            if (!done)
            {
                done = true;
                undo();
            }
        }
    }

    bool LookupIntoGrad() =>
        forBackward
        && (long)Config.VocabSize * Config.HiddenSize >= LookupIntoGradFrom
        && is_grad_enabled()
        && model.embed_tokens.weight!.requires_grad;

    public KVCache NewCache(long batch, long capacity) => new(Config, batch, capacity, DType, Device);

    public long ParameterCount() => parameters().Sum(p => p.numel());
}

/// <summary>Keys and values that attention covers before the current call's: <see cref="Length"/> positions of them.
/// </summary>
public interface IKVCache
{
    long Length { get; }

    /// <summary>Takes layer <paramref name="layer"/>'s keys and values of the current call ([B, kv_heads, T,
    /// head_dim], after RoPE) and returns those attention covers: the earlier positions', then these.</summary>
    (Tensor k, Tensor v) Append(int layer, Tensor k, Tensor v);

    /// <summary>Called once per forward, after every layer: the call's T positions are now earlier ones.</summary>
    void Advance(long t);
}

/// <summary>
/// Preallocated per-layer key/value buffers [B, kv_heads, capacity, head_dim]. Appending writes in place, so the cost
/// of a decoding step does not grow with position beyond attention itself.
/// </summary>
public sealed class KVCache : IKVCache, IDisposable
{
    readonly Tensor[] keys,
        values;
    public long Length { get; private set; }
    public long Capacity { get; }

    public KVCache(Qwen3Config c, long batch, long capacity, ScalarType dtype, Device device)
        : this(c.NumHiddenLayers, c.NumKeyValueHeads, c.HeadDim, batch, capacity, dtype, device) { }

    /// <summary>The bytes a cache of <paramref name="batch"/> rows and <paramref name="capacity"/> positions takes:
    /// keys and values of every layer, allocated whole when it is made.</summary>
    public static long Bytes(Qwen3Config c, ScalarType dtype, long batch, long capacity) =>
        2L * c.NumHiddenLayers * batch * c.NumKeyValueHeads * capacity * c.HeadDim * ElementBytes(dtype);

    static long ElementBytes(ScalarType t) =>
        t switch
        {
            ScalarType.Float64 => 8,
            ScalarType.Float32 => 4,
            ScalarType.BFloat16 or ScalarType.Float16 => 2,
            _ => throw new ArgumentException($"KV cache: no size for dtype {t}"),
        };

    KVCache(int layers, long kvHeads, long headDim, long batch, long capacity, ScalarType dtype, Device device)
    {
        Capacity = capacity;
        keys = new Tensor[layers];
        values = new Tensor[layers];
        for (int i = 0; i < layers; i++)
        {
            keys[i] = zeros([batch, kvHeads, capacity, headDim], dtype: dtype, device: device).DetachFromDisposeScope();
            values[i] = zeros([batch, kvHeads, capacity, headDim], dtype: dtype, device: device)
                .DetachFromDisposeScope();
        }
    }

    (Tensor k, Tensor v) IKVCache.Append(int layer, Tensor k, Tensor v)
    {
        long T = k.size(2);
        if (Length + T > Capacity)
            throw new InvalidOperationException($"KV cache full: {Length}+{T} > capacity {Capacity}");
        using (no_grad())
        {
            keys[layer].narrow(2, Length, T).copy_(k);
            values[layer].narrow(2, Length, T).copy_(v);
        }
        return (keys[layer].narrow(2, 0, Length + T), values[layer].narrow(2, 0, Length + T));
    }

    void IKVCache.Advance(long t) => Length += t;

    /// <summary>A new cache whose rows are this one's, each repeated <paramref name="times"/> times in place
    /// (row b becomes rows b·times … b·times + times − 1), with the same length and capacity.</summary>
    public KVCache RepeatRows(int times)
    {
        var k0 = keys[0]; // [B, kv_heads, capacity, head_dim]
        var c = new KVCache(keys.Length, k0.shape[1], k0.shape[3], k0.shape[0] * times, Capacity, k0.dtype, k0.device);
        try
        {
            using var _ = no_grad();
            for (int i = 0; i < keys.Length; i++)
            {
                using var k = keys[i].narrow(2, 0, Length).repeat_interleave(times, dim: 0);
                using var v = values[i].narrow(2, 0, Length).repeat_interleave(times, dim: 0);
                c.keys[i].narrow(2, 0, Length).copy_(k);
                c.values[i].narrow(2, 0, Length).copy_(v);
            }
        }
        catch
        {
            c.Dispose(); // its buffers belong to no dispose scope
            throw;
        }
        c.Length = Length;
        return c;
    }

    public void Dispose()
    {
        foreach (var t in keys)
            t.Dispose();
        foreach (var t in values)
            t.Dispose();
    }
}
