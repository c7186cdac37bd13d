// The landscape (Polyak–Łojasiewicz) view on a softmax-linear policy, in exact double precision. The statements are
// OUR reconstruction of the paper's v2 results (notes/paper.md §3, tagged [R]); they are not quoted from the paper.
//  Model: prompts x with features φ_x ∈ R^d and weights q_x; logits z_x = W φ_x (W ∈ R^{K×d}); p_x = softmax(z_x).
//  SFT:  L_S(W) = Σ_x q_x CE(p_data,x, p_x), realisable: p_data = softmax(W* φ), so L_S* = Σ q H(p_data) at W*.
//  RL:   J_β(W) = Σ_x q_x [p_x·r_x − β KL(p_x ‖ p_data,x)] (reference = the SFT model), realisable rewards r_x = R φ_x,
//        so the maximiser is W* + R/β. RL = gradient ascent with step η from W*.
//  Checked exactly (rigorous constants):
//   • smoothness of L_S: ∇²L_S ⪯ ½ λ_max(Σ q φφᵀ) (softmax Hessian ⪯ ½ I), hence L_S(W_T) − L_S* ≤ ℓ_S/2 ‖W_T − W*‖²;
//   • one RL step lowers L_S whenever cos(∇J, −∇L_S) > ℓ_S η ‖∇J‖ / (2‖∇L_S‖), and then the SFT gap is at least
//     ℓ_S η² ‖∇J‖² / (8 cos²) — near SFT optimality an RL step cannot lower the SFT loss;
//   • spectral concentration: for PSD M = Σ λ_i u_i u_iᵀ and vectors a, b whose M-energy is ≥ (1−ε) on u_1,
//     |aᵀMb| ≥ (1−2ε) ‖a‖_M ‖b‖_M (the gradients are then nearly collinear).
//  Measured against predictions with constants estimated along the trajectory (PL is local here):
//   • J* − J(W_T) ≤ (1−κ)^T (J* − J(W_0)), κ = ημ_R(2 − ℓ_R η); the optimal RL duration T* of Φ(T) = ΔJ − λ ΔL_S.
namespace Workbook.Theory;

public sealed class SoftmaxLinear
{
    public int N { get; } // prompts
    public int K { get; } // responses
    public int D { get; } // features
    public double[] Q { get; }
    public double[][] Phi { get; }
    public double[,] WStar { get; }
    public double[,] R { get; }
    public double Beta { get; }

    public SoftmaxLinear(int n, int k, int d, double beta, int seed, double rewardScale = 1.0)
    {
        N = n;
        K = k;
        D = d;
        Beta = beta;
        var rng = new Random(seed);
        double G() => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
        var w = Enumerable.Range(0, n).Select(_ => -Math.Log(1 - rng.NextDouble())).ToArray();
        Q = w.Select(v => v / w.Sum()).ToArray();
        Phi = Enumerable
            .Range(0, n)
            .Select(_ => Enumerable.Range(0, d).Select(_ => G() / Math.Sqrt(d)).ToArray())
            .ToArray();
        WStar = new double[k, d];
        R = new double[k, d];
        for (int a = 0; a < k; a++)
        for (int j = 0; j < d; j++)
        {
            WStar[a, j] = G();
            R[a, j] = rewardScale * G();
        }
    }

    double[] Logits(double[,] W, int x)
    {
        var z = new double[K];
        for (int a = 0; a < K; a++)
        for (int j = 0; j < D; j++)
            z[a] += W[a, j] * Phi[x][j];
        return z;
    }

    static double[] Softmax(double[] z)
    {
        double m = z.Max();
        var e = z.Select(v => Math.Exp(v - m)).ToArray();
        var s = e.Sum();
        return e.Select(v => v / s).ToArray();
    }

    public double[] Policy(double[,] W, int x) => Softmax(Logits(W, x));

    public double[] Data(int x) => Policy(WStar, x);

    public double[] Reward(int x) => Logits(R, x);

    public double SftLoss(double[,] W) =>
        Enumerable
            .Range(0, N)
            .Sum(x =>
            {
                var p = Policy(W, x);
                var pd = Data(x);
                return Q[x] * Enumerable.Range(0, K).Sum(a => -pd[a] * Math.Log(p[a]));
            });

    public double SftOptimum => SftLoss(WStar);

    public double Objective(double[,] W) =>
        Enumerable
            .Range(0, N)
            .Sum(x =>
            {
                var p = Policy(W, x);
                var pd = Data(x);
                var r = Reward(x);
                return Q[x] * Enumerable.Range(0, K).Sum(a => p[a] * r[a] - Beta * p[a] * Math.Log(p[a] / pd[a]));
            });

    public double[,] RlOptimum
    {
        get
        {
            var W = (double[,])WStar.Clone();
            for (int a = 0; a < K; a++)
            for (int j = 0; j < D; j++)
                W[a, j] += R[a, j] / Beta;
            return W;
        }
    }

    double[,] Grad(double[,] W, Func<double[], int, double[]> logitGrad)
    {
        var g = new double[K, D];
        for (int x = 0; x < N; x++)
        {
            var gz = logitGrad(Policy(W, x), x);
            for (int a = 0; a < K; a++)
            for (int j = 0; j < D; j++)
                g[a, j] += Q[x] * gz[a] * Phi[x][j];
        }
        return g;
    }

    /// <summary>∇L_S: logit gradient p − p_data.</summary>
    public double[,] SftGrad(double[,] W) =>
        Grad(
            W,
            (p, x) =>
            {
                var pd = Data(x);
                return p.Select((v, a) => v - pd[a]).ToArray();
            }
        );

    /// <summary>∇J_β (ascent direction): logit gradient p ⊙ (g − p·g), g = r − β log(p/p_data).</summary>
    public double[,] ObjectiveGrad(double[,] W) =>
        Grad(
            W,
            (p, x) =>
            {
                var pd = Data(x);
                var r = Reward(x);
                var g = Enumerable.Range(0, K).Select(a => r[a] - Beta * Math.Log(p[a] / pd[a])).ToArray();
                double m = Enumerable.Range(0, K).Sum(a => p[a] * g[a]);
                return Enumerable.Range(0, K).Select(a => p[a] * (g[a] - m)).ToArray();
            }
        );

    /// <summary>Rigorous smoothness constant of L_S: ½ λ_max(Σ q φ φᵀ).</summary>
    public double SftSmoothness
    {
        get
        {
            var C = new double[D, D];
            for (int x = 0; x < N; x++)
            for (int i = 0; i < D; i++)
            for (int j = 0; j < D; j++)
                C[i, j] += Q[x] * Phi[x][i] * Phi[x][j];
            return 0.5 * Linalg.SymmetricEigen(C).values.Max();
        }
    }

    /// <summary>λ_max of −∇²J_β at W (finite-difference Hessian-vector products, power iteration).</summary>
    public double ObjectiveCurvature(double[,] W, int iterations = 60)
    {
        var v = Linalg.Random(K, D, 3);
        Linalg.Normalize(v);
        double lam = 0;
        for (int it = 0; it < iterations; it++)
        {
            double h = 1e-5;
            var gp = ObjectiveGrad(Linalg.Add(W, v, h));
            var gm = ObjectiveGrad(Linalg.Add(W, v, -h));
            var hv = Linalg.Scale(Linalg.Add(gp, gm, -1), -1 / (2 * h)); // −H v
            lam = Linalg.Dot(v, hv);
            if (Linalg.Norm(hv) == 0)
                break;
            v = hv;
            Linalg.Normalize(v);
        }
        return lam;
    }

    /// <summary>Distance from W to the SFT-optimal set {W* + 1uᵀ} (softmax ignores a shift common to all
    /// responses).</summary>
    public double DistanceToSftOptimum(double[,] W)
    {
        double s = 0;
        for (int j = 0; j < D; j++)
        {
            double mean = Enumerable.Range(0, K).Average(a => W[a, j] - WStar[a, j]);
            for (int a = 0; a < K; a++)
                s += Math.Pow(W[a, j] - WStar[a, j] - mean, 2);
        }
        return Math.Sqrt(s);
    }
}

public sealed record RlTrajectoryPoint(
    int T,
    double SftGap,
    double ObjectiveGap,
    double Displacement,
    double Distance,
    double SftUpperBound,
    double SftQuadraticGrowth
);

public sealed record LandscapeResult(
    double EllS,
    double MuS,
    double EllR,
    double MuR,
    double Eta,
    double Kappa,
    IReadOnlyList<RlTrajectoryPoint> Trajectory,
    int MeasuredTStar,
    double PredictedTStar,
    double Lambda,
    int ContractionViolations,
    int UpperBoundViolations
);

public static class Landscape
{
    /// <summary>Gradient ascent on J_β from the SFT optimum with η = 1/ℓ_R; constants and bounds along the
    /// way.</summary>
    public static LandscapeResult RlFromSftOptimum(SoftmaxLinear m, int steps, double lambda)
    {
        var W = (double[,])m.WStar.Clone();
        double ellS = m.SftSmoothness;
        double ellR = m.ObjectiveCurvature(m.WStar);
        ellR = Math.Max(ellR, m.ObjectiveCurvature(m.RlOptimum));
        double eta = 1 / ellR;
        double jStar = m.Objective(m.RlOptimum),
            sStar = m.SftOptimum,
            j0 = m.Objective(W);
        var ws = new List<double[,]> { (double[,])W.Clone() };
        for (int t = 0; t < steps; t++)
        {
            W = Linalg.Add(W, m.ObjectiveGrad(W), eta);
            ws.Add((double[,])W.Clone());
        }
        // PL constants: the smallest ratio ½‖∇f‖² / gap along the trajectory
        double muR = ws.Where(w => jStar - m.Objective(w) > 1e-12)
            .Select(w => 0.5 * Math.Pow(Linalg.Norm(m.ObjectiveGrad(w)), 2) / (jStar - m.Objective(w)))
            .DefaultIfEmpty(0)
            .Min();
        double muS = ws.Skip(1)
            .Where(w => m.SftLoss(w) - sStar > 1e-12)
            .Select(w => 0.5 * Math.Pow(Linalg.Norm(m.SftGrad(w)), 2) / (m.SftLoss(w) - sStar))
            .DefaultIfEmpty(0)
            .Min();
        double kappa = eta * muR * (2 - ellR * eta);
        var traj = new List<RlTrajectoryPoint>();
        int contraction = 0,
            upper = 0;
        for (int t = 0; t < ws.Count; t++)
        {
            double sGap = m.SftLoss(ws[t]) - sStar,
                jGap = jStar - m.Objective(ws[t]);
            double disp = Linalg.Norm(Linalg.Add(ws[t], m.WStar, -1)),
                dist = m.DistanceToSftOptimum(ws[t]);
            double upperB = ellS / 2 * dist * dist; // ∇L_S(W*) = 0 and ℓ_S-smooth (shift directions carry no curvature)
            if (sGap > upperB * (1 + 1e-9) + 1e-15)
                upper++;
            if (jGap > Math.Pow(1 - kappa, t) * (jStar - j0) * (1 + 1e-9) + 1e-15)
                contraction++;
            traj.Add(new RlTrajectoryPoint(t, sGap, jGap, disp, dist, upperB, muS / 2 * dist * dist));
        }
        // Φ(T) = [J(W_T) − J(W_0)] − λ [L_S(W_T) − L_S*]: measured argmax vs the prediction from the lower bound
        var phi = ws.Select(w => m.Objective(w) - j0 - lambda * (m.SftLoss(w) - sStar)).ToList();
        int tMeasured = phi.IndexOf(phi.Max());
        double c = lambda * ellS * ellR * eta * eta / Math.Pow(1 - Math.Sqrt(1 - kappa), 2);
        double tPredicted = kappa > 0 && kappa < 1 ? 2 * Math.Log(1 + 1 / c) / -Math.Log(1 - kappa) : double.NaN;
        return new LandscapeResult(
            ellS,
            muS,
            ellR,
            muR,
            eta,
            kappa,
            traj,
            tMeasured,
            tPredicted,
            lambda,
            contraction,
            upper
        );
    }

    public sealed record ThresholdCheck(
        int Steps,
        int SufficientHeld,
        int SufficientButNotDecreased,
        int SufficientButGapBelowThreshold,
        int Decreased
    );

    /// <summary>Single RL steps from random points around the SFT optimum: when the sufficient condition holds, the SFT
    /// loss must fall and the SFT gap must exceed ℓ_S η²‖∇J‖²/(8cos²φ).</summary>
    public static ThresholdCheck OneStepThreshold(SoftmaxLinear m, double eta, int trials, int seed)
    {
        double ellS = m.SftSmoothness,
            sStar = m.SftOptimum;
        var rng = new Random(seed);
        int held = 0,
            notDecreased = 0,
            belowThreshold = 0,
            decreased = 0;
        for (int i = 0; i < trials; i++)
        {
            var noise = Linalg.Random(m.K, m.D, rng.Next());
            var W = Linalg.Add(m.WStar, noise, Math.Exp(rng.NextDouble() * 6 - 5)); // perturbations from 0.007 to 2.7
            var gS = m.SftGrad(W);
            var gJ = m.ObjectiveGrad(W);
            double nS = Linalg.Norm(gS),
                nJ = Linalg.Norm(gJ);
            if (nS == 0 || nJ == 0)
                continue;
            double cos = -Linalg.Dot(gJ, gS) / (nS * nJ);
            double before = m.SftLoss(W),
                after = m.SftLoss(Linalg.Add(W, gJ, eta));
            if (after < before)
                decreased++;
            if (cos > ellS * eta * nJ / (2 * nS))
            {
                held++;
                if (!(after < before))
                    notDecreased++;
                if (before - sStar < ellS * eta * eta * nJ * nJ / (8 * cos * cos) * (1 - 1e-9))
                    belowThreshold++;
            }
        }
        return new ThresholdCheck(trials, held, notDecreased, belowThreshold, decreased);
    }

    /// <summary>|aᵀMb| / (‖a‖_M ‖b‖_M) and the bound 1 − 2ε, with ε the larger share of M-energy off the top
    /// eigenvector.</summary>
    public static (double Cos, double Epsilon, double Bound) SpectralConcentration(double[,] M, double[] a, double[] b)
    {
        var (values, vectors) = Linalg.SymmetricEigen(M);
        int top = Array.IndexOf(values, values.Max());
        double Energy(double[] v, int i)
        {
            double c = 0;
            for (int r = 0; r < v.Length; r++)
                c += vectors[r, i] * v[r];
            return values[i] * c * c;
        }
        double ea = Enumerable.Range(0, values.Length).Sum(i => Energy(a, i)),
            eb = Enumerable.Range(0, values.Length).Sum(i => Energy(b, i));
        double eps = Math.Max(1 - Energy(a, top) / ea, 1 - Energy(b, top) / eb);
        double amb = 0;
        for (int r = 0; r < a.Length; r++)
        for (int s = 0; s < b.Length; s++)
            amb += a[r] * M[r, s] * b[s];
        return (Math.Abs(amb) / Math.Sqrt(ea * eb), eps, 1 - 2 * eps);
    }
}

/// <summary>Small dense linear algebra (Jacobi eigen-decomposition; matrices as K×D arrays).</summary>
public static class Linalg
{
    public static double[,] Random(int r, int c, int seed)
    {
        var rng = new Random(seed);
        var m = new double[r, c];
        for (int i = 0; i < r; i++)
        for (int j = 0; j < c; j++)
            m[i, j] = Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
        return m;
    }

    public static double[,] Add(double[,] a, double[,] b, double s)
    {
        var r = (double[,])a.Clone();
        for (int i = 0; i < a.GetLength(0); i++)
        for (int j = 0; j < a.GetLength(1); j++)
            r[i, j] += s * b[i, j];
        return r;
    }

    public static double[,] Scale(double[,] a, double s) => Add(new double[a.GetLength(0), a.GetLength(1)], a, s);

    public static double Dot(double[,] a, double[,] b)
    {
        double s = 0;
        for (int i = 0; i < a.GetLength(0); i++)
        for (int j = 0; j < a.GetLength(1); j++)
            s += a[i, j] * b[i, j];
        return s;
    }

    public static double Norm(double[,] a) => Math.Sqrt(Dot(a, a));

    public static void Normalize(double[,] a)
    {
        var n = Norm(a);
        for (int i = 0; i < a.GetLength(0); i++)
        for (int j = 0; j < a.GetLength(1); j++)
            a[i, j] /= n;
    }

    /// <summary>Eigenvalues and eigenvectors (columns) of a symmetric matrix, cyclic Jacobi rotations.</summary>
    public static (double[] values, double[,] vectors) SymmetricEigen(double[,] S)
    {
        int n = S.GetLength(0);
        var A = (double[,])S.Clone();
        var V = new double[n, n];
        for (int i = 0; i < n; i++)
            V[i, i] = 1;
        for (int sweep = 0; sweep < 100; sweep++)
        {
            double off = 0;
            for (int i = 0; i < n; i++)
            for (int j = i + 1; j < n; j++)
                off += A[i, j] * A[i, j];
            if (off < 1e-30)
                break;
            for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++)
            {
                if (Math.Abs(A[p, q]) < 1e-300)
                    continue;
                double theta = (A[q, q] - A[p, p]) / (2 * A[p, q]);
                double t = Math.Sign(theta) / (Math.Abs(theta) + Math.Sqrt(theta * theta + 1));
                if (theta == 0)
                    t = 1;
                double c = 1 / Math.Sqrt(t * t + 1),
                    s = t * c;
                for (int k = 0; k < n; k++)
                {
                    double akp = A[k, p],
                        akq = A[k, q];
                    A[k, p] = c * akp - s * akq;
                    A[k, q] = s * akp + c * akq;
                }
                for (int k = 0; k < n; k++)
                {
                    double apk = A[p, k],
                        aqk = A[q, k];
                    A[p, k] = c * apk - s * aqk;
                    A[q, k] = s * apk + c * aqk;
                }
                for (int k = 0; k < n; k++)
                {
                    double vkp = V[k, p],
                        vkq = V[k, q];
                    V[k, p] = c * vkp - s * vkq;
                    V[k, q] = s * vkp + c * vkq;
                }
            }
        }
        return (Enumerable.Range(0, n).Select(i => A[i, i]).ToArray(), V);
    }
}
