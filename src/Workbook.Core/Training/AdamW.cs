// AdamW exactly as torch.optim.AdamW (decoupled weight decay, bias-corrected moments), with its whole state in tensors
// this class owns, so a checkpoint is plain safetensors and resuming is exact. Parameters stored in bf16 get a float32
// master copy: gradients are upcast, the update happens in float32, and the result is rounded into the bf16 parameter.
// A second AdamW over the same parameters (the joint trainer's GRPO term) shares the first one's master copies, so
// neither rounds the other's update away.
using TorchSharp;
using TorchSharp.Modules;
using Workbook.Model;
using static TorchSharp.torch;

namespace Workbook.Training;

public sealed class AdamW : IDisposable
{
    readonly Parameter[] ps;
    readonly string[] names;
    readonly Tensor[] m,
        v;
    readonly Tensor?[] master;
    readonly bool ownsMaster,
        largeModel;
    public long Step { get; private set; }
    public double Beta1 { get; }
    public double Beta2 { get; }
    public double Eps { get; }
    public double WeightDecay { get; }

    public AdamW(
        IEnumerable<(string name, Parameter p)> parameters,
        double beta1 = 0.9,
        double beta2 = 0.999,
        double eps = 1e-8,
        double weightDecay = 0.0,
        AdamW? shareMasterWith = null
    )
    {
        var list = parameters.Where(x => x.p.requires_grad).ToList();
        names = list.Select(x => x.name).ToArray();
        ps = list.Select(x => x.p).ToArray();
        Beta1 = beta1;
        Beta2 = beta2;
        Eps = eps;
        WeightDecay = weightDecay;
        // by size alone, so that a model's numbers do not depend on the allocator setting
        largeModel = ps.Sum(p => p.numel()) >= Memory.LargeModel;
        KeepGradsFrom = largeModel ? Memory.LargeModelMmapThreshold : null;
        kept = new Tensor?[ps.Length];
        using var _ = no_grad();
        m = ps.Select(p => zeros(p.shape, dtype: ScalarType.Float32, device: p.device).DetachFromDisposeScope())
            .ToArray();
        v = ps.Select(p => zeros(p.shape, dtype: ScalarType.Float32, device: p.device).DetachFromDisposeScope())
            .ToArray();
        if (shareMasterWith is { } other)
        {
            if (!other.names.SequenceEqual(names))
                throw new ArgumentException("a shared master copy needs the same parameters", nameof(shareMasterWith));
            master = other.master;
            return;
        }
        ownsMaster = true;
        master = ps.Select(p =>
            {
                if (p.dtype == ScalarType.Float32)
                    return null;
                using var d = p.detach(); // held: a temporary may be finalized mid-call (see HeldScalars)
                return d.to(ScalarType.Float32).DetachFromDisposeScope();
            })
            .ToArray();
    }

    /// <summary>Drops the gradients (torch's zero_grad(set_to_none=True), its default since 2.0), but zeroes those of
    /// parameters from <see cref="KeepGradsFrom"/> bytes (set_to_none=False), which keep one gradient tensor for the
    /// optimizer's life. A parameter without a gradient is skipped by the step, as in torch, and a zeroed one is
    /// stepped (its moments decay); every trainer's loss reaches every parameter, so the two agree.</summary>
    public void ZeroGrad()
    {
        using var _ = no_grad();
        for (int i = 0; i < ps.Length; i++)
            if (KeepGradsFrom is { } from && ps[i].numel() * ps[i].ElementSize >= from)
            {
                // set_grad takes its own reference; the kept tensor is disposed with the optimizer
                kept[i] ??= zeros(ps[i].shape, dtype: ps[i].dtype, device: ps[i].device).DetachFromDisposeScope();
                kept[i]!.zero_();
                ps[i].grad = kept[i];
            }
            else
                ps[i].grad = null;
    }

    /// <summary>Parameters of at least this many bytes keep their gradient tensor from step to step, zeroed by
    /// <see cref="ZeroGrad"/>, and backward adds into it in place; null: every gradient is dropped. Why: a big
    /// parameter's gradient made afresh by every backward is a request that glibc may serve from the heap. At 0.6B
    /// scale the tied embedding's (622 MB) was sometimes carved from the free chunk that the previous step's layer
    /// gradients had left; the layer gradients then grew the heap, and once the embedding's gradient was mapped again
    /// the heap's free pages stayed resident beside it: the step's peak rose by 0.58 GiB in about 1 run in 5 (README,
    /// Platform notes). A tied embedding is written in place by both its uses inside Qwen3ForCausalLM.ForBackward
    /// (Model/TiedHead.cs, Model/EmbeddingLookupIntoGrad.cs), so no transient of its size remains; an untied big head
    /// goes through autograd, whose gradient is added into the kept one and freed at once. Default: the large-model
    /// allocator's mapping threshold (16 MiB, <see cref="Memory.LargeModelMmapThreshold"/>) for models of 100M
    /// parameters or more (<see cref="Memory.LargeModel"/>), null below that (the main job's: unchanged). The same
    /// gradients either way (0 + g = g; tested).</summary>
    public long? KeepGradsFrom { get; init; }

    readonly Tensor?[] kept;

    /// <summary>Drops every gradient, the kept ones too (their tensors are freed; the next <see cref="ZeroGrad"/>
    /// makes them again). For the trainers' evaluations: a 0.6B model's kept embedding gradient is 0.58 GiB that an
    /// evaluation, which loads the stage-start weights beside the model and its moments, has no use for.</summary>
    public void DropAllGrads()
    {
        ReleaseKept();
        foreach (var p in ps)
            p.grad = null;
    }

    /// <summary>Forgets the kept gradient tensors (their handles only: a parameter or a caller holding one keeps its
    /// storage); the next <see cref="ZeroGrad"/> makes them again.</summary>
    void ReleaseKept()
    {
        for (int i = 0; i < ps.Length; i++)
        {
            kept[i]?.Dispose();
            kept[i] = null;
        }
    }

    /// <summary>Takes the gradients off the parameters (they are left without one), to be put back later by
    /// <see cref="PutGrads"/>: two optimizers over one model step on gradients computed at the same weights.</summary>
    public Tensor?[] TakeGrads()
    {
        var g = ps.Select(p => p.grad).ToArray();
        ReleaseKept(); // a kept gradient goes with them (the caller's now): ZeroGrad would zero the tensor just taken
        ZeroGrad();
        return g;
    }

    public void PutGrads(Tensor?[] grads)
    {
        for (int i = 0; i < ps.Length; i++)
            ps[i].grad = grads[i];
    }

    /// <summary>Global L2 norm of the gradients; scales them down to maxNorm when above it (torch's
    /// clip_grad_norm_).</summary>
    public double ClipGradNorm(double maxNorm)
    {
        using var _ = no_grad();
        var grads = ps.Where(p => p.grad is not null).Select(p => p.grad!).ToList();
        if (grads.Count == 0)
            return 0;
        // one scope per parameter, so an upcast square of every gradient never exists at once (at 0.6B scale that
        // doubled the gradients' memory); only the per-parameter sums survive (bit-identical to one reduction below
        // ClipSliceFrom; see SquaredSum)
        using var outer = NewDisposeScope();
        // every Scalar here is named: an implicit one may be finalized by a GC on another thread mid-call
        using Scalar two = 2;
        var sums = new Tensor[grads.Count];
        for (int i = 0; i < grads.Count; i++)
        {
            using var scope = NewDisposeScope();
            sums[i] = SquaredSum(grads[i], two).MoveToOuterDisposeScope();
        }
        var total = stack(sums).sum().sqrt().Value();
        if (maxNorm > 0 && total > maxNorm)
        {
            using Scalar coef = maxNorm / (total + 1e-6);
            foreach (var g in grads)
                g.mul_(coef);
        }
        return total;
    }

    /// <summary>The sum of a gradient's squares in float32. A big gradient's square would be parameter-sized (622 MB
    /// for the 0.6B embedding) while every gradient exists, so it is summed slice by slice: not bit-identical to one
    /// sum, so gradients below <see cref="ClipSliceFrom"/> keep that.</summary>
    Tensor SquaredSum(Tensor g, Scalar two)
    {
        if (!Sliced(g, ClipSliceFrom ?? (largeModel ? SliceFrom : 1L << 23)))
            return g.to(ScalarType.Float32).pow(two).sum();
        var parts = new List<Tensor>();
        foreach (var (r, n) in RowSlices(g))
        {
            using var scope = NewDisposeScope(); // per slice: its float32 square dies before the next one exists
            parts.Add(g.narrow(0, r, n).to(ScalarType.Float32).pow(two).sum().MoveToOuterDisposeScope());
        }
        return stack(parts).sum();
    }

    /// <summary>Parameters of at least this many elements are updated in slices of about <see cref="Slice"/>
    /// elements (rows of a matrix), so that the update's temporaries (the float32 gradient of a bf16 parameter, the
    /// denominator) are never parameter-sized: at 0.6B scale the tied embedding's are 622 MB each, and they set the
    /// step's peak once the backward's own is gone. Slices of 2 MiB (float32) stay under the large-model setting's
    /// mapping threshold (Util/Memory.cs), so they are reused from the heap instead of being mapped and faulted in at
    /// every parameter. Every operation is elementwise, so the result is bit-identical (tested). Settable for tests.
    /// </summary>
    public long SliceFrom { get; init; } = 1L << 20;

    /// <summary>Elements per slice (see <see cref="SliceFrom"/>); at least one row.</summary>
    public long Slice { get; init; } = 1L << 19;

    /// <summary>Gradients of at least this many elements have their squares summed slice by slice by the clip
    /// (<see cref="SquaredSum"/>). By default 2²³, or <see cref="SliceFrom"/> for a model of 100M parameters or more
    /// (Memory.LargeModel), whose allocator setting would map and fault in a big gradient's square (or float32
    /// copy) afresh at every clip. Settable for tests.</summary>
    public long? ClipSliceFrom { get; init; }

    public void StepWith(double lr)
    {
        Step++;
        using var _ = no_grad();
        double bc1 = 1 - Math.Pow(Beta1, Step),
            bc2 = 1 - Math.Pow(Beta2, Step);
        // named Scalars, made once per step: an implicit one may be finalized by a GC on another thread mid-call
        using var k = new StepScalars(1 - lr * WeightDecay, Beta1, Beta2, Math.Sqrt(bc2), Eps, -lr / bc1);
        for (int i = 0; i < ps.Length; i++)
        {
            var p = ps[i];
            if (p.grad is null)
                continue;
            using var scope = NewDisposeScope(); // per parameter: its temporaries die before the next one's exist
            var grad = p.grad;
            var w = master[i] ?? (Tensor)p;
            if (!Sliced(p, SliceFrom))
                Update(grad, w, m[i], v[i], k);
            else
                foreach (var (r, n) in RowSlices(p))
                {
                    using var slice = NewDisposeScope(); // per slice
                    Update(grad.narrow(0, r, n), w.narrow(0, r, n), m[i].narrow(0, r, n), v[i].narrow(0, r, n), k);
                }
            if (master[i] is { } mw)
                p.copy_(mw); // copy_ rounds into the bf16 parameter without a temporary
        }
    }

    /// <summary>Whether a tensor shaped like a parameter is handled in row slices from this many elements
    /// (<see cref="SliceFrom"/> for the update, <see cref="ClipSliceFrom"/> for the clip).</summary>
    bool Sliced(Tensor t, long from) => t.dim() > 0 && t.numel() >= Math.Max(1, from);

    /// <summary>(first row, rows) of each slice of about <see cref="Slice"/> elements, at least one row each.</summary>
    IEnumerable<(long start, long rows)> RowSlices(Tensor t)
    {
        long rows = t.shape[0],
            step = Math.Max(1, Slice / (t.numel() / rows));
        for (long r = 0; r < rows; r += step)
            yield return (r, Math.Min(step, rows - r));
    }

    void Update(Tensor grad, Tensor w, Tensor m, Tensor v, StepScalars k)
    {
        var g = grad.dtype == ScalarType.Float32 ? grad : grad.to(ScalarType.Float32);
        if (WeightDecay != 0)
            w.mul_(k.Decay);
        m.mul_(k.B1).add_(g, alpha: k.OneMinusB1);
        v.mul_(k.B2).addcmul_(g, g, value: k.OneMinusB2);
        var denom = v.sqrt().div_(k.SqrtBc2).add_(k.Eps, HeldScalars.One);
        w.addcdiv_(m, denom, value: k.StepSize);
    }

    sealed class StepScalars(double decay, double b1, double b2, double sqrtBc2, double eps, double stepSize)
        : IDisposable
    {
        public readonly Scalar Decay = decay,
            B1 = b1,
            B2 = b2,
            OneMinusB1 = 1 - b1,
            OneMinusB2 = 1 - b2,
            SqrtBc2 = sqrtBc2,
            Eps = eps,
            StepSize = stepSize;

        public void Dispose()
        {
            foreach (var s in new[] { Decay, B1, B2, OneMinusB1, OneMinusB2, SqrtBc2, Eps, StepSize })
                s.Dispose();
        }
    }

    public void Save(string path)
    {
        var d = new Dictionary<string, Tensor>();
        for (int i = 0; i < ps.Length; i++)
        {
            d[$"exp_avg.{names[i]}"] = m[i];
            d[$"exp_avg_sq.{names[i]}"] = v[i];
            if (ownsMaster && master[i] is { } mw)
                d[$"master.{names[i]}"] = mw;
        }
        SafetensorsFile.Save(
            path,
            d,
            new Dictionary<string, string> { ["step"] = Step.ToString(), ["format"] = "workbook-adamw" }
        );
    }

    public void Load(string path)
    {
        using var f = SafetensorsFile.Open(path);
        if (!f.Metadata.TryGetValue("step", out var s) || !long.TryParse(s, out var step))
            throw new WorkbookException($"{path}: optimizer state has no step");
        using var _ = no_grad();
        for (int i = 0; i < ps.Length; i++)
        {
            foreach (
                var (prefix, t) in new[] { ("exp_avg", m[i]), ("exp_avg_sq", v[i]) }.Concat(
                    ownsMaster && master[i] is { } mw ? [("master", mw)] : []
                )
            )
            {
                var key = $"{prefix}.{names[i]}";
                if (!f.Entries.ContainsKey(key))
                    throw new WorkbookException($"{path}: optimizer state is missing '{key}'");
                using var x = f.Read(key);
                if (!x.shape.SequenceEqual(t.shape))
                    throw new WorkbookException($"{path}: '{key}' has the wrong shape");
                t.copy_(x);
            }
        }
        Step = step;
    }

    public void Dispose()
    {
        foreach (var t in m.Concat(v))
            t.Dispose();
        foreach (var t in kept)
            t?.Dispose();
        if (ownsMaster)
            foreach (var t in master)
                t?.Dispose();
    }
}

/// <summary>Learning-rate schedules as transformers defines them: linear warmup, then linear/cosine decay or
/// constant.</summary>
public static class LrSchedule
{
    public static double At(string type, double baseLr, long step, long totalSteps, long warmupSteps)
    {
        if (warmupSteps > 0 && step < warmupSteps)
            return baseLr * (step + 1) / (double)warmupSteps; // step is 0-based
        double progress =
            totalSteps <= warmupSteps ? 1 : (step - warmupSteps) / (double)Math.Max(1, totalSteps - warmupSteps);
        return type switch
        {
            "constant" => baseLr,
            "linear" => baseLr * Math.Max(0, 1 - progress),
            "cosine" => baseLr * 0.5 * (1 + Math.Cos(Math.PI * Math.Min(1, progress))),
            _ => throw new WorkbookException(
                $"unknown lr_scheduler_type '{type}': expected linear, cosine or constant"
            ),
        };
    }
}
