using Dapr.Client.Autogen.Grpc.v1;
using Google.Protobuf;
using Grpc.Core;

namespace HandoffDapr.FakeSidecar;

/// <summary>A unary gRPC reply: either a message or an error, plus response headers.</summary>
internal sealed record GrpcReply(byte[]? Message, GrpcError? Error)
{
    public List<KeyValuePair<string, string>> Headers { get; } = new();
}

/// <summary>
/// The <c>dapr.proto.runtime.v1.Dapr</c> service calls <c>DaprClient</c> makes, dispatched by path. Shared by the
/// h2c Kestrel endpoint and the in-memory handler. Dapr.Protos ships no server base, so messages are parsed by hand.
/// </summary>
internal sealed class GrpcDispatcher(
    FakeSidecarOptions options,
    PubSubBroker broker,
    HttpBindingEmulator bindings,
    KeyValueStateStores states,
    SidecarMetadata metadata)
{
    private const string Service = "/dapr.proto.runtime.v1.Dapr/";

    public async Task<GrpcReply> DispatchAsync(string path, IReadOnlyDictionary<string, string> headers, byte[] body, CancellationToken ct)
    {
        if (!path.StartsWith(Service, StringComparison.Ordinal))
        {
            return new GrpcReply(null, GrpcError.Plain(StatusCode.Unimplemented, $"unknown service {path.Trim('/').Split('/')[0]}"));
        }

        // pkg/api/grpc/auth.go: the token interceptor runs before every Dapr API method.
        if (!string.IsNullOrEmpty(options.ApiToken))
        {
            if (!headers.TryGetValue("dapr-api-token", out var token))
            {
                return new GrpcReply(null, GrpcError.FromHttpStatus(401, "Unauthorized", StatusCode.Unauthenticated, "missing api token in request metadata"));
            }

            if (token != options.ApiToken)
            {
                return new GrpcReply(null, GrpcError.FromHttpStatus(401, "Unauthorized", StatusCode.Unauthenticated, "authentication error: api token mismatch"));
            }
        }

        if (!GrpcFraming.TryReadSingleMessage(body, out var message, out var framingError))
        {
            return new GrpcReply(null, GrpcError.Plain(StatusCode.Internal, framingError ?? "bad request"));
        }

        var method = path[Service.Length..];
        try
        {
            return method switch
            {
                "InvokeBinding" => await InvokeBindingAsync(InvokeBindingRequest.Parser.ParseFrom(message.Span), headers, ct).ConfigureAwait(false),
                "PublishEvent" => await PublishEventAsync(PublishEventRequest.Parser.ParseFrom(message.Span), ct).ConfigureAwait(false),
                "GetState" => GetState(GetStateRequest.Parser.ParseFrom(message.Span)),
                "SaveState" => SaveState(SaveStateRequest.Parser.ParseFrom(message.Span)),
                "DeleteState" => DeleteState(DeleteStateRequest.Parser.ParseFrom(message.Span)),
                "GetMetadata" => Ok(await metadata.BuildGrpcAsync(ct).ConfigureAwait(false)),
                // UnimplementedDaprServer's wording for methods this fake does not serve.
                _ => new GrpcReply(null, GrpcError.Plain(StatusCode.Unimplemented, $"method {method} not implemented")),
            };
        }
        catch (InvalidProtocolBufferException ex)
        {
            return new GrpcReply(null, GrpcError.Plain(StatusCode.Internal, "grpc: error unmarshalling request: " + ex.Message));
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            // A bug in the fake must show up as a gRPC status the test can read, not as a bare HTTP 500.
            return new GrpcReply(null, GrpcError.Plain(StatusCode.Unknown, "fake sidecar failure: " + ex));
        }
    }

    private async Task<GrpcReply> InvokeBindingAsync(InvokeBindingRequest request, IReadOnlyDictionary<string, string> headers, CancellationToken ct)
    {
        var incoming = headers.Where(h => h.Key is not ("dapr-api-token" or "content-type" or "te") && !h.Key.StartsWith(':'))
            .ToDictionary(h => h.Key.StartsWith("grpc-", StringComparison.Ordinal) ? "dapr-" + h.Key[5..] : h.Key, h => h.Value);
        var (response, responseMetadata, error) = await bindings.InvokeAsync(request, incoming, ct).ConfigureAwait(false);
        var reply = error is null ? Ok(response!) : new GrpcReply(null, error);

        // "Some bindings have metadata in the response even in case of error": sent as metadata.<key> headers.
        foreach (var (key, value) in responseMetadata ?? new Dictionary<string, string>())
        {
            if (value.All(ch => ch is >= ' ' and <= '~') && key.All(ch => ch is > ' ' and <= '~' and not ':'))
            {
                reply.Headers.Add(new("metadata." + key.ToLowerInvariant(), value));
            }
        }

        return reply;
    }

    /// <summary>Awaited before a gRPC publish is taken (topic): a slow broker.</summary>
    public Func<string, CancellationToken, Task>? BeforePublish { get; set; }

    private async Task<GrpcReply> PublishEventAsync(PublishEventRequest request, CancellationToken ct)
    {
        if (BeforePublish is { } slow)
        {
            await slow(request.Topic, ct).ConfigureAwait(false);
        }

        var error = broker.Publish(request.PubsubName, request.Topic, request.Data.ToByteArray(),
            string.IsNullOrEmpty(request.DataContentType) ? null : request.DataContentType,
            request.Metadata.ToDictionary(kv => kv.Key, kv => kv.Value));
        return error is null ? Ok(new Google.Protobuf.WellKnownTypes.Empty()) : new GrpcReply(null, error);
    }

    private GrpcReply GetState(GetStateRequest request)
    {
        if (states.CheckStore(request.StoreName) is { } error)
        {
            return new GrpcReply(null, error);
        }

        var response = new GetStateResponse();
        if (states.Get(request.StoreName, request.Key) is { } item)
        {
            response.Data = ByteString.CopyFrom(item.Value);
            response.Etag = item.ETag;
        }

        return Ok(response);
    }

    private GrpcReply SaveState(SaveStateRequest request)
    {
        if (states.CheckStore(request.StoreName) is { } error)
        {
            return new GrpcReply(null, error);
        }

        var items = request.States
            .Select(s => (s.Key, s.Value.ToByteArray(), s.Etag?.Value, (IReadOnlyDictionary<string, string>)s.Metadata.ToDictionary(kv => kv.Key, kv => kv.Value)))
            .ToList();
        return states.Save(request.StoreName, items) is { } saveError
            ? new GrpcReply(null, saveError)
            : Ok(new Google.Protobuf.WellKnownTypes.Empty());
    }

    private GrpcReply DeleteState(DeleteStateRequest request)
    {
        if (states.CheckStore(request.StoreName) is { } error)
        {
            return new GrpcReply(null, error);
        }

        return states.Delete(request.StoreName, request.Key, request.Etag?.Value) is { } deleteError
            ? new GrpcReply(null, deleteError)
            : Ok(new Google.Protobuf.WellKnownTypes.Empty());
    }

    private static GrpcReply Ok(IMessage message) => new(message.ToByteArray(), null);
}
