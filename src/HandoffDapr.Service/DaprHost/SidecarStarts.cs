namespace HandoffDapr.Service.DaprHost;

/// <summary>
/// The starts of daprd seen by this app: daprd reads the app's <c>GET dapr/config</c> once, as it starts. The actor
/// runtime keeps each active actor, with the state it has read, until daprd deactivates it; a daprd that restarted
/// never does for the actors its predecessor placed here (it does not know of them), while meanwhile their runs may
/// have been placed on another replica and changed there. So an actor active from before the latest start does not
/// trust what it has cached (see <see cref="HandoffRunActor"/>).
/// </summary>
public sealed class SidecarStarts
{
    private long count;

    /// <summary>How many times daprd has asked for the app's configuration.</summary>
    public long Count => Interlocked.Read(ref count);

    internal void Seen() => Interlocked.Increment(ref count);
}
