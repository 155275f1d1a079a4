namespace HandoffDapr.FakeSidecar;

/// <summary>One attempt of an actor method call, as the sidecar's resiliency policy made it, and how it ended.</summary>
/// <param name="ActorType">The actor type called.</param>
/// <param name="ActorId">The actor id called.</param>
/// <param name="Method">The method called.</param>
/// <param name="Error">daprd's error message for a failed attempt (<c>error invoke actor method: …</c>), or null when the app answered 200 without an error header.</param>
public sealed record ActorCallAttempt(string ActorType, string ActorId, string Method, string? Error);
