namespace HandoffDapr.Service.Tests.Infrastructure;

/// <summary>A seeded <see cref="Random"/> that the randomized tests' concurrent operations may share (System.Random is not thread-safe).</summary>
public sealed class LockedRandom(int seed) : Random(seed)
{
    private readonly object gate = new();

    public override int Next()
    {
        lock (gate)
        {
            return base.Next();
        }
    }

    public override int Next(int maxValue)
    {
        lock (gate)
        {
            return base.Next(maxValue);
        }
    }

    public override int Next(int minValue, int maxValue)
    {
        lock (gate)
        {
            return base.Next(minValue, maxValue);
        }
    }

    public override double NextDouble()
    {
        lock (gate)
        {
            return base.NextDouble();
        }
    }
}
