using HandoffDapr.FakeSidecar;

namespace HandoffDapr.Service.Tests.Infrastructure;

/// <summary>
/// Every state read of one actor held at the fake sidecar (a slow state store) until released, or for at most 60 s: a
/// request reading that run stays in progress, which keeps a shutdown's drain waiting. Disposing releases it.
/// </summary>
internal sealed class HeldActorReads : IDisposable
{
    private readonly ManualResetEventSlim released = new();

    public HeldActorReads(FakeDaprSidecar sidecar, string actorId) =>
        sidecar.BeforeActorStateRead = async call =>
        {
            if (call.ActorId == actorId)
            {
                Arrived.Set();
                await Eventually.Within(TimeSpan.FromSeconds(60), () => released.IsSet);
            }
        };

    /// <summary>Set once a read of the actor is held.</summary>
    public ManualResetEventSlim Arrived { get; } = new();

    public void Release() => released.Set();

    public void Dispose() => Release();
}
