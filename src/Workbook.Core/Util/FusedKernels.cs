// Fused CPU kernels for float32 RMSNorm and RoPE (src/native/fused_kernels.c, built into libworkbook_fused.so beside
// the core):
//  1. Why: at the main job's shapes (rows of 96 or 24) libtorch's composite norm is six kernels forward and about ten
//     backward, each a pass over memory plus a few microseconds of dispatch; one pass each way measured 2.8x faster
//     (forward and backward, [32, 72, 96]) and 5x faster without autograd (a decoding step's [64, 1, 96]).
//  2. Numbers: Hugging Face's formula, float32 throughout; only the order of the row's sum of squares (and of the
//     backward's sums) differs from libtorch's, so results differ from the composite ops in the last bits (tested
//     within 1e-6 relative of float64). The bits do not depend on the CPU's instruction set (fixed summation order,
//     no FMA contraction), and the same kernel serves autograd, no-grad forwards and cached decoding alike.
//  3. Under autograd the kernel pair is a TorchSharp custom function (its per-call overhead, about 35 us, is why a
//     decoding step, which runs without autograd, calls the kernel directly). A backward that builds a graph
//     (create_graph: Hessian-vector products) runs the same formula in differentiable libtorch ops instead, so second
//     derivatives stay exact.
//  4. RoPE (since 2026-12-06, late): one pass each way with libtorch's roundings in its order, so its bits are the
//     composite ops' (tested): it only saves time (the roll copy, two products, a sum, the queries' reshape copy).
//  5. WORKBOOK_FUSED_KERNELS: auto (the default: on where the library was built) or 0 (off: the composite ops,
//     Hugging Face's formula bit for bit, as before 2026-12-06); any other value is refused by the CLI. Suspend()
//     turns them off for one thread (tests compare both). versions.json records the state: runs with and without
//     are other computations, so they never reuse each other's units.
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;
using unsafe BackwardFn = delegate* unmanaged<
    float*,
    float*,
    float*,
    float*,
    float*,
    float*,
    float*,
    double*,
    long,
    long,
    void>;
using unsafe ForwardFn = delegate* unmanaged<float*, float*, float*, float*, long, long, float, void>;
using unsafe RopeFn = delegate* unmanaged<float*, float*, float*, float*, long*, long*, void>;

namespace Workbook;

public static unsafe class FusedKernels
{
    public const string LibraryName = "libworkbook_fused.so";
    public const string Variable = "WORKBOOK_FUSED_KERNELS";
    const int Version = 3; // workbook_fused_version() of the library this code expects

    /// <summary>Names the loaded kernels' numerics for cache keys of models trained with them: the version and the
    /// library's SHA-256, so a rebuilt or edited kernel never shares a cache with the one before; null when
    /// off.</summary>
    public static string? KernelId =>
        Loaded.Value.Api is null ? null : $"fused-rmsnorm-rope-v{Version}-{Loaded.Value.Sha}";

    static readonly Lazy<(string State, Api? Api, string Sha)> Loaded = new(Load);

    [ThreadStatic]
    static int suspended;

    /// <summary>"on (...)", "off (WORKBOOK_FUSED_KERNELS=0)" or "unavailable (why)".</summary>
    public static string State => Loaded.Value.State;

    /// <summary>Whether this thread's float32 CPU norms and RoPE take the fused kernels.</summary>
    public static bool Enabled => suspended == 0 && Loaded.Value.Api is not null;

    /// <summary>An unknown value of <see cref="Variable"/>, which the CLI refuses; null when it is fine.</summary>
    public static string? Problem =>
        Environment.GetEnvironmentVariable(Variable) is { } v && Mode(v) is null
            ? $"{Variable}={v}: expected auto (the default: on where libworkbook_fused.so was built) or 0 (off)"
            : null;

    // NativeSetup's parser of the native switches: here "on" means the default too (on where the library was built)
    static string? Mode(string? value) => NativeSetup.Mode(value) is { } m ? (m == "off" ? "off" : "auto") : null;

    /// <summary>Turns the fused kernels off on this thread until disposed (nests).</summary>
    public static IDisposable Suspend()
    {
        suspended++;
        return new Resume();
    }

    sealed class Resume : IDisposable
    {
        bool done;

        public void Dispose()
        {
            if (!done)
                suspended--;
            done = true;
        }
    }

    /// <summary>Whether <see cref="RmsNorm"/> can take this input on this thread: float32 input and weight on the
    /// CPU, the kernels loaded and not suspended.</summary>
    public static bool TakesRmsNorm(Tensor x, Tensor weight) =>
        Enabled
        && x.dtype == ScalarType.Float32
        && weight.dtype == ScalarType.Float32
        && x.device_type == DeviceType.CPU
        && weight.device_type == DeviceType.CPU
        && weight.dim() == 1
        && x.dim() >= 1
        && weight.size(0) > 0
        && x.size(-1) == weight.size(0);

    /// <summary>weight * (x / sqrt(mean(x², last dim) + eps)) in one pass (float32, CPU; see
    /// <see cref="TakesRmsNorm"/>); differentiable in x and weight.</summary>
    public static Tensor RmsNorm(Tensor x, Tensor weight, double eps) =>
        TryRmsNorm(x, weight, eps)
        ?? throw new InvalidOperationException(
            $"fused RMSNorm takes float32 CPU tensors with the weight's width last ({State}); got "
                + $"{x.dtype} [{string.Join(", ", x.shape)}] and {weight.dtype} [{string.Join(", ", weight.shape)}]"
        );

    /// <summary><see cref="RmsNorm"/> where <see cref="TakesRmsNorm"/> holds, else null (the caller's own path):
    /// one check per call.</summary>
    public static Tensor? TryRmsNorm(Tensor x, Tensor weight, double eps)
    {
        if (!TakesRmsNorm(x, weight))
            return null;
        if (is_grad_enabled() && (x.requires_grad || weight.requires_grad))
            return RmsNormFunction.apply(x, weight, eps);
        using var scope = NewDisposeScope();
        return Forward(x, weight, eps, rstd: null).MoveToOuterDisposeScope();
    }

    /// <summary>The forward kernel on contiguous copies (views where already contiguous); <paramref name="rstd"/>,
    /// when given, receives each row's 1/√(mean(x²) + eps).</summary>
    static Tensor Forward(Tensor input, Tensor weight, double eps, Tensor? rstd)
    {
        var x = input.contiguous();
        var w = weight.contiguous();
        var y = empty_like(x);
        long dim = w.size(0);
        Loaded.Value.Api!.Forward(
            Data(x),
            Data(w),
            Data(y),
            rstd is null ? null : Data(rstd),
            x.numel() / dim,
            dim,
            (float)eps
        );
        GC.KeepAlive(x); // each wrapper holds its tensor's memory until the native call returns
        GC.KeepAlive(w);
        GC.KeepAlive(rstd);
        return y;
    }

    sealed class RmsNormFunction : autograd.SingleTensorFunction<RmsNormFunction>
    {
        public override string Name => "WorkbookRMSNorm";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            Tensor input = (Tensor)vars[0],
                weight = (Tensor)vars[1];
            var rstd = empty(input.numel() / weight.size(0), dtype: ScalarType.Float32);
            var y = Forward(input, weight, (double)vars[2], rstd);
            // the inputs themselves, not contiguous copies made here without autograd: a double backward
            // differentiates through them
            ctx.save_for_backward([input, weight, rstd]);
            ctx.save_data("eps", vars[2]);
            return y;
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
        {
            var saved = ctx.get_saved_variables();
            Tensor input = saved[0],
                weight = saved[1],
                rstd = saved[2];
            if (is_grad_enabled()) // create_graph: the gradient must itself be differentiable
                return Differentiable(input, weight, gradOutput, (double)ctx.get_data("eps"));
            var x = input.contiguous();
            var w = weight.contiguous();
            long dim = w.size(0),
                rows = x.numel() / dim;
            var gy = gradOutput.contiguous();
            var gx = empty_like(x);
            var gw = empty(dim, dtype: ScalarType.Float32);
            var scratch = empty(dim, dtype: ScalarType.Float32);
            var acc = empty(dim, dtype: ScalarType.Float64);
            Loaded.Value.Api!.Backward(
                Data(x),
                Data(w),
                Data(rstd),
                Data(gy),
                Data(gx),
                Data(gw),
                Data(scratch),
                (double*)Pointer(acc),
                rows,
                dim
            );
            GC.KeepAlive(x);
            GC.KeepAlive(w);
            GC.KeepAlive(rstd);
            GC.KeepAlive(gy);
            scratch.Dispose();
            acc.Dispose();
            return [gx, gw, null!];
        }

        /// <summary>The backward's formula in libtorch's differentiable ops (float32 throughout), for a backward that
        /// builds a graph: gx = r·(g − n·mean(g·n)) with g = gy·w, n = x·r, r = 1/√(mean(x²) + eps);
        /// gw = Σ gy·n over every row.</summary>
        static List<Tensor> Differentiable(Tensor x, Tensor w, Tensor gy, double eps)
        {
            using Scalar two = 2,
                e = eps;
            var r = rsqrt(x.pow(two).mean([-1L], keepdim: true).Plus(e));
            var n = x.mul(r);
            var g = gy.mul(w);
            var gx = r.mul(g - n.mul(g.mul(n).mean([-1L], keepdim: true)));
            // 0L: a bare 0 converts to ScalarType.Byte (sum's dtype overload)
            var gw = gy.mul(n).reshape(-1, w.size(0)).sum(0L);
            return [gx, gw, null!];
        }
    }

    /// <summary>Whether <see cref="TryRope"/> can take x [B, H, T, D] with these tables: float32 on the CPU, not empty,
    /// D even, x's elements each in their own place (no expanded dimension: the gradient takes x's strides) with rows
    /// contiguous, cos and sinSigned [B or 1, 1, T, D] without gradients, the kernels on here.</summary>
    static bool TakesRope(Tensor x, Tensor cos, Tensor sinSigned)
    {
        if (!Enabled || x.dtype != ScalarType.Float32 || x.device_type != DeviceType.CPU || x.dim() != 4)
            return false;
        long d = x.size(3);
        if (x.numel() == 0 || d % 2 != 0 || x.stride(3) != 1 || !Dense(x))
            return false;
        foreach (var table in (ReadOnlySpan<Tensor>)[cos, sinSigned])
            if (
                table.dtype != ScalarType.Float32
                || table.device_type != DeviceType.CPU
                || table.requires_grad
                || table.dim() != 4
                || (table.size(0) != x.size(0) && table.size(0) != 1)
                || table.size(1) != 1
                || table.size(2) != x.size(2)
                || table.size(3) != d
                || table.stride(3) != 1
            )
                return false;
        return true;
    }

    /// <summary>Whether t's strides lay its elements out without overlap or gaps, in some order of its dimensions
    /// (a permuted contiguous tensor, like the attention's transposed projections).</summary>
    static bool Dense(Tensor t)
    {
        var dims = Enumerable.Range(0, (int)t.dim()).Where(i => t.size(i) > 1).OrderBy(i => t.stride(i)).ToArray();
        long expected = 1;
        foreach (var i in dims)
        {
            if (t.stride(i) != expected)
                return false;
            expected *= t.size(i);
        }
        return true;
    }

    /// <summary>Rotate-half RoPE of the queries and keys, x·cos + roll(x, D/2)·sinSigned, in one pass each (float32,
    /// CPU; differentiable in q and k), or null where the kernels cannot take them (the caller's own path). The bits
    /// equal the composite ops'. The queries come back contiguous as [B, H, T, D] (the attention's grouped view of
    /// them is then free); the keys keep the layout libtorch's ops give them (that of k).</summary>
    public static (Tensor Q, Tensor K)? TryRope(Tensor q, Tensor k, Tensor cos, Tensor sinSigned)
    {
        if (!TakesRope(q, cos, sinSigned) || !TakesRope(k, cos, sinSigned))
            return null;
        var outs =
            is_grad_enabled() && (q.requires_grad || k.requires_grad)
                ? RopeFunction.apply(q, k, cos, sinSigned)
                : RopeForward(q, k, cos, sinSigned);
        return (outs[0], outs[1]);
    }

    /// <summary>Both forward kernels: the queries into a contiguous [B, H, T, D] (heads first), the keys into k's
    /// layout (what libtorch's elementwise ops would give).</summary>
    static List<Tensor> RopeForward(Tensor q, Tensor k, Tensor cos, Tensor sinSigned) =>
        [
            Rope(q, cos, sinSigned, empty(q.shape, dtype: ScalarType.Float32, device: q.device)),
            Rope(k, cos, sinSigned, empty_like(k)),
        ];

    /// <summary>Runs one RoPE kernel: the forward from x into y, or with <paramref name="backward"/> the gradient
    /// gx (into y) from gy (as x). Strides are passed as they are; only rows must be contiguous.</summary>
    static Tensor Rope(Tensor x, Tensor cos, Tensor sinSigned, Tensor y, bool backward = false)
    {
        var rows = x.stride(3) == 1 ? x : x.contiguous();
        long* dims = stackalloc long[] { rows.size(0), rows.size(1), rows.size(2), rows.size(3) };
        long* st = stackalloc long[]
        {
            rows.stride(0),
            rows.stride(1),
            rows.stride(2),
            cos.size(0) == 1 ? 0 : cos.stride(0),
            cos.stride(2),
            sinSigned.size(0) == 1 ? 0 : sinSigned.stride(0),
            sinSigned.stride(2),
            y.stride(0),
            y.stride(1),
            y.stride(2),
        };
        var api = Loaded.Value.Api!;
        (backward ? api.RopeBackward : api.RopeForward)(Data(rows), Data(cos), Data(sinSigned), Data(y), dims, st);
        GC.KeepAlive(rows);
        GC.KeepAlive(cos);
        GC.KeepAlive(sinSigned);
        if (!ReferenceEquals(rows, x))
            rows.Dispose();
        return y;
    }

    sealed class RopeFunction : autograd.MultiTensorFunction<RopeFunction>
    {
        public override string Name => "WorkbookRoPE";

        public override List<Tensor> forward(autograd.AutogradContext ctx, params object[] vars)
        {
            Tensor q = (Tensor)vars[0],
                k = (Tensor)vars[1],
                cos = (Tensor)vars[2],
                sinSigned = (Tensor)vars[3];
            ctx.save_for_backward([cos, sinSigned]);
            // an output nobody used gets no gradient (not zeros made from an output a dispose scope may have freed)
            ctx.set_materialize_grads(false);
            // each gradient takes its input's layout (dense: TakesRope), what the layers before it made; an input
            // without a gradient gets none
            ctx.save_data("q", q.requires_grad ? q.stride() : null!);
            ctx.save_data("k", k.requires_grad ? k.stride() : null!);
            return RopeForward(q, k, cos, sinSigned);
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, List<Tensor> grads)
        {
            var saved = ctx.get_saved_variables();
            Tensor cos = saved[0],
                sinSigned = saved[1];
            var createGraph = is_grad_enabled(); // the gradient must itself be differentiable
            return [Gradient(grads[0], "q"), Gradient(grads[1], "k"), null!, null!];

            Tensor Gradient(Tensor? gy, string input)
            {
                if (gy is null || gy.IsInvalid || ctx.get_data(input) is not long[] strides)
                    return null!;
                if (createGraph) // x·cos + roll(x)·s is linear in x: gy·cos + roll(gy·s, −D/2), differentiable
                    return gy.mul(cos).Plus(gy.mul(sinSigned).roll(-(gy.size(3) / 2), -1));
                var gx = empty_strided(gy.shape, strides, dtype: ScalarType.Float32, device: gy.device);
                return Rope(gy, cos, sinSigned, gx, backward: true);
            }
        }
    }

    /// <summary>Runs a build of the kernel library (<paramref name="libraryPath"/>, loaded as the CPU picks its
    /// clone) on plain arrays, forward then backward, so two builds (another compiler, instruction set or flags) can
    /// be compared bit for bit. <paramref name="x"/> and <paramref name="gradY"/> hold rows of
    /// <paramref name="w"/>'s width.</summary>
    public static (float[] Y, float[] GradX, float[] GradW) RunBuild(
        string libraryPath,
        float[] x,
        float[] w,
        float[] gradY,
        float eps
    )
    {
        int dim = w.Length,
            rows = dim == 0 ? 0 : x.Length / dim;
        if (dim == 0 || x.Length != rows * dim || gradY.Length != x.Length)
            throw new ArgumentException($"x ({x.Length}) and gradY ({gradY.Length}) must hold whole rows of {dim}");
        Kernels(NativeLibrary.Load(libraryPath), libraryPath, out var forward, out var backward);
        float[] y = new float[x.Length],
            rstd = new float[rows],
            gx = new float[x.Length],
            gw = new float[dim],
            scratch = new float[dim];
        var acc = new double[dim];
        fixed (
            float* px = x,
                pw = w,
                py = y,
                pr = rstd,
                pg = gradY,
                pgx = gx,
                pgw = gw,
                ps = scratch
        )
        fixed (double* pa = acc)
        {
            forward(px, pw, py, pr, rows, dim, eps);
            backward(px, pw, pr, pg, pgx, pgw, ps, pa, rows, dim);
        }
        return (y, gx, gw);
    }

    static float* Data(Tensor t) => (float*)Pointer(t);

    static IntPtr Pointer(Tensor t)
    {
        var p = Loaded.Value.Api!.DataPtr(t.Handle);
        if (p == IntPtr.Zero)
            throw new InvalidOperationException($"fused kernels: no data pointer for a {t.dtype} tensor on {t.device}");
        return p;
    }

    /// <summary>A build's kernels, after checking that it is the version this code expects.</summary>
    static void Kernels(IntPtr lib, string path, out ForwardFn forward, out BackwardFn backward)
    {
        var version = (delegate* unmanaged<int>)NativeLibrary.GetExport(lib, "workbook_fused_version");
        if (version() != Version)
            throw new InvalidOperationException($"{path} is version {version()}, this build expects {Version}");
        forward = (ForwardFn)NativeLibrary.GetExport(lib, "workbook_rmsnorm_forward_f32");
        backward = (BackwardFn)NativeLibrary.GetExport(lib, "workbook_rmsnorm_backward_f32");
    }

    sealed class Api
    {
        public required delegate* unmanaged<IntPtr, IntPtr> DataPtr;
        public required ForwardFn Forward;
        public required BackwardFn Backward;
        public required RopeFn RopeForward;
        public required RopeFn RopeBackward;
    }

    static (string, Api?, string) Load()
    {
        if (Mode(Environment.GetEnvironmentVariable(Variable)) == "off")
            return ($"off ({Variable}=0)", null, "");
        if (!OperatingSystem.IsLinux())
            return ("unavailable (built for Linux only)", null, "");
        var dir = Path.GetDirectoryName(typeof(FusedKernels).Assembly.Location);
        var path = string.IsNullOrEmpty(dir) ? null : Path.Combine(dir, LibraryName);
        if (path is null || !File.Exists(path))
            return ($"unavailable ({LibraryName} was not built: gcc missing or failing at build time)", null, "");
        try
        {
            var sha = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(path)))[
                ..12
            ];
            var lib = NativeLibrary.Load(path);
            Kernels(lib, path, out var forward, out var backward);
            // the tensor's data pointer from TorchSharp's own native library, as its assembly resolves it
            if (!NativeLibrary.TryLoad("LibTorchSharp", typeof(torch).Assembly, null, out var lts))
                return ("unavailable (LibTorchSharp not found)", null, "");
            var api = new Api
            {
                DataPtr = (delegate* unmanaged<IntPtr, IntPtr>)NativeLibrary.GetExport(lts, "THSTensor_data"),
                Forward = forward,
                Backward = backward,
                RopeForward = (RopeFn)NativeLibrary.GetExport(lib, "workbook_rope_forward_f32"),
                RopeBackward = (RopeFn)NativeLibrary.GetExport(lib, "workbook_rope_backward_f32"),
            };
            return (
                $"on (float32 RMSNorm and RoPE on the CPU, {LibraryName} v{Version} sha256 {sha}; "
                    + $"{Variable}=0 turns it off)",
                api,
                sha
            );
        }
        catch (InvalidOperationException e) // another version of the library
        {
            return ($"unavailable ({e.Message})", null, "");
        }
        catch (Exception e)
            when (e is DllNotFoundException or BadImageFormatException or EntryPointNotFoundException or IOException)
        {
            return ($"unavailable ({path}: {e.Message})", null, "");
        }
    }
}
