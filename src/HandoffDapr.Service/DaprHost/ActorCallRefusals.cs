using System.Collections;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using System.Xml;
using HandoffDapr.Service.Api;
using Microsoft.AspNetCore.Http.HttpResults;

namespace HandoffDapr.Service.DaprHost;

/// <summary>
/// Around the SDK's actor routes (<c>actors/…</c>). Any app may call an actor type through its own sidecar, and daprd
/// relays the call as it came (without <c>APP_API_TOKEN</c>, anyone reaching the port may send one): a body that is not
/// JSON of the method's parameter, or a method or actor type this app does not have, is the caller's mistake. The SDK
/// lets each escape as an exception, which would be a 500 and an error with a stack trace in the log; here they are a
/// 400 or a 404 problem. A turn that fails is not touched: it is thrown from the actor as its own exception type.
/// </summary>
internal static class ActorCallRefusals
{
    /// <summary>A reminder's firing as daprd's Scheduler sends it: no data (the actor registers none), empty times.</summary>
    private static readonly byte[] SchedulerReminderBody = """{"data":null,"dueTime":"","period":""}"""u8.ToArray();

    /// <param name="bodyLimit">The largest body of an actor call (the routes' request size limit).</param>
    /// <param name="arguments">How a method call's body is checked before the SDK reads it.</param>
    public static async Task InvokeAsync(HttpContext context, RequestDelegate call, long bodyLimit, ActorCallArguments arguments)
    {
        var request = context.Request;
        if (RefuseUnservedRoute(request.RouteValues) is { } unserved)
        {
            await unserved.ExecuteAsync(context);
            return;
        }

        // The actor reads a reminder by its name alone (the Scheduler sends empty times; see
        // HandoffRunActor.ReceiveReminderAsync), but the SDK reads the body first and threw, a 500, at shapes it does not
        // expect: data that is not base64 (a reminder registered elsewhere with JSON data), a time null or in another form
        // ("1h"), a body with neither time. daprd then fires it again, to the same end. A body that is not a JSON object is
        // refused as any other actor call's; any object is handed on as the Scheduler writes one.
        if (request.RouteValues.ContainsKey("reminderName"))
        {
            var (body, problem) = await RequestBody.ReadAsync(request, bodyLimit, context.RequestAborted);
            var refused = body is null ? problem! : ReplaceReminderBody(request, body);
            if (refused is not null)
            {
                await refused.ExecuteAsync(context);
                return;
            }
        }

        // A call in the proxy's format (the method in a header, the argument wrapped) rather than the plain one.
        var remoting = request.Headers.ContainsKey(ActorCallArguments.RemotingHeader);

        // A method's argument is checked against what its type says (see ActorCallArguments) before the SDK reads it.
        PooledBody? argument = null;
        if (request.RouteValues["methodName"] is string methodName
            && arguments.ParameterOf(methodName) is { } parameter)
        {
            (argument, var problem) = await RequestBody.ReadAsync(request, bodyLimit, context.RequestAborted);
            var refused = argument is null
                ? problem!
                : CheckArgument(request, argument, arguments, parameter, remoting);
            if (refused is not null)
            {
                await refused.ExecuteAsync(context);
                return;
            }
        }

        // A proxy's call the SDK cannot read (its header, its body) is answered as an actor's exception would be: a 200 with
        // the exception's type and message, and in a header the method and line it was thrown at. That answer is held.
        var remotingAnswer = remoting ? new HeldExceptionAnswer(context.Response) : null;
        try
        {
            await call(context);
        }
        catch (JsonException) when (!context.Response.HasStarted)
        {
            // Thrown by the SDK's reading of the body, before the actor runs (the actor's own faults are turned into
            // ActorTurnFailedException).
            await Problems.InvalidBody("The actor call's body is not JSON of the method's parameter.").ExecuteAsync(context);
        }
        catch (MissingMethodException) when (!context.Response.HasStarted)
        {
            await Problems.NoSuchEndpoint().ExecuteAsync(context);
        }
        finally
        {
            if (remotingAnswer is not null)
            {
                context.Response.Body = remotingAnswer.Inner;
            }

            argument?.Dispose();
        }

        if (remotingAnswer?.Held is { } exceptionAnswer)
        {
            await AnswerHeldExceptionAsync(context, exceptionAnswer);
        }
    }

    /// <summary>
    /// The refusal, a 404, of an actor type or a timer route this app does not serve; null for any other route.
    /// </summary>
    private static ProblemHttpResult? RefuseUnservedRoute(RouteValueDictionary routeValues)
    {
        // The only type this app hosts (the SDK would throw InvalidOperationException, which is too broad to catch).
        if (routeValues["actorTypeName"] is string type && type != HandoffRunActor.ActorTypeName)
        {
            return Problems.NoSuchEndpoint();
        }

        // The actor registers no timers, so daprd never fires one: a timer call came from elsewhere. The SDK would run
        // whatever public method of the actor its body names (outside the actor's interface), and throw, a 500, for a
        // body without one.
        if (routeValues.ContainsKey("timerName"))
        {
            return Problems.NoSuchEndpoint();
        }

        return null;
    }

    /// <summary>
    /// A reminder call's body, disposed here, replaced by the Scheduler's; the refusal if it is not a JSON object.
    /// </summary>
    private static ProblemHttpResult? ReplaceReminderBody(HttpRequest request, PooledBody body)
    {
        using (body)
        {
            if (!IsJsonObject(body.Memory))
            {
                return Problems.InvalidBody("The reminder call's body is not a JSON object.");
            }
        }

        request.Body = new MemoryStream(SchedulerReminderBody, writable: false);
        request.ContentLength = SchedulerReminderBody.Length;
        return null;
    }

    /// <summary>
    /// Null when the argument is JSON of the method's parameter, handed on as the request's body (the caller disposes
    /// it once the call is made); else the refusal, the argument disposed.
    /// </summary>
    private static ProblemHttpResult? CheckArgument(
        HttpRequest request, PooledBody argument, ActorCallArguments arguments, ParameterInfo parameter, bool remoting)
    {
        if (!arguments.IsArgument(argument.Memory, parameter, remoting))
        {
            argument.Dispose();
            return Problems.InvalidBody("The actor call's body is not JSON of the method's parameter.");
        }

        // The bytes already read are handed on, not copied: the SDK reads them as it would the request's body.
        if (!MemoryMarshal.TryGetArray(argument.Memory, out var bytes))
        {
            throw new InvalidOperationException("A pooled body is backed by an array.");
        }

        request.Body = new MemoryStream(bytes.Array!, bytes.Offset, bytes.Count, writable: false);
        request.ContentLength = bytes.Count;
        return null;
    }

    /// <summary>
    /// A proxy's call answered by an exception: a failed turn's answer sent as it was held, any other a 400.
    /// </summary>
    private static ValueTask AnswerHeldExceptionAsync(HttpContext context, byte[] exceptionAnswer)
    {
        if (ExceptionTypeOf(exceptionAnswer) is { } type
            && (type == typeof(ActorTurnFailedException).FullName || type == typeof(ActorRunStateDamagedException).FullName))
        {
            // A failed turn: its fixed text, for the app's own proxy (which answers 503 or asks for redelivery).
            return context.Response.Body.WriteAsync(exceptionAnswer, context.RequestAborted);
        }

        context.Response.Headers.Remove(HeldExceptionAnswer.ErrorHeader);
        const string NotOfTheInterface = "The actor call could not be read as a call of this actor's interface.";
        return new ValueTask(Problems.InvalidRequest(NotOfTheInterface).ExecuteAsync(context));
    }

    /// <summary>The type the SDK wrote into an exception answer (its ActorInvokeExceptionData, binary XML); null if unreadable.</summary>
    private static string? ExceptionTypeOf(byte[] answer)
    {
        try
        {
            using var reader = XmlDictionaryReader.CreateBinaryReader(answer, XmlDictionaryReaderQuotas.Max);
            while (reader.Read())
            {
                if (reader.NodeType == XmlNodeType.Element && reader.LocalName == "Type")
                {
                    return reader.ReadElementContentAsString();
                }
            }
        }
        catch (XmlException)
        {
        }

        return null;
    }

    /// <summary>
    /// Stands in for the response's body during a proxy's call: passes a normal answer through as it is written, and keeps
    /// an exception answer (the SDK sets its error header before writing it) instead of sending it.
    /// </summary>
    private sealed class HeldExceptionAnswer : Stream
    {
        public const string ErrorHeader = "X-DaprErrorResponseHeader";

        private readonly HttpResponse response;
        private MemoryStream? held;

        public HeldExceptionAnswer(HttpResponse response)
        {
            this.response = response;
            Inner = response.Body;
            response.Body = this;
        }

        public Stream Inner { get; }

        public byte[]? Held => held?.ToArray();

        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            if (IsExceptionAnswer())
            {
                held!.Write(buffer);
            }
            else
            {
                Inner.Write(buffer);
            }
        }

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (IsExceptionAnswer())
            {
                held!.Write(buffer.Span);
                return ValueTask.CompletedTask;
            }

            return Inner.WriteAsync(buffer, cancellationToken);
        }

        public override void Flush()
        {
            if (held is null)
            {
                Inner.Flush();
            }
        }

        public override Task FlushAsync(CancellationToken cancellationToken) => held is null ? Inner.FlushAsync(cancellationToken) : Task.CompletedTask;
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();

        private bool IsExceptionAnswer()
        {
            if (held is null && response.Headers.ContainsKey(ErrorHeader))
            {
                held = new MemoryStream();
            }

            return held is not null;
        }
    }

    private static bool IsJsonObject(ReadOnlyMemory<byte> body)
    {
        try
        {
            using var document = JsonDocument.Parse(body);
            return document.RootElement.ValueKind == JsonValueKind.Object;
        }
        catch (JsonException)
        {
            return false;
        }
    }
}

/// <summary>
/// The SDK reads a method call's body with the actor runtime's options, which are also those of the actor's state: they
/// read a member that is missing, or null where its type says never, as null (or 0), as state stored by earlier releases
/// must still read. A call is not state: such a body (<c>{}</c>, <c>{"round":null}</c>, <c>{"launches":[null]}</c>) came
/// from elsewhere than this app, which writes every member, and reached the engine as a NullReferenceException in the
/// turn (a 500, logged as the store's fault). Each method's argument is read first with the same options made strict,
/// built once: nullable annotations and constructor parameters without a default are respected, and a list whose
/// elements are declared never null holds none.
/// </summary>
internal sealed class ActorCallArguments
{
    /// <summary>Sent with a call made through the SDK's proxy (this app's own, <see cref="ActorRunOwner"/>).</summary>
    public const string RemotingHeader = "X-DaprRequestHeader";

    private readonly Dictionary<string, ParameterInfo> parameters;
    private readonly JsonSerializerOptions strict;

    public ActorCallArguments(JsonSerializerOptions actorJson)
    {
        // The actor's interface, as the SDK dispatches by it: every method takes one argument or none.
        parameters = typeof(IHandoffRunActor).GetMethods()
            .Where(method => method.GetParameters().Length == 1)
            .ToDictionary(method => method.Name, method => method.GetParameters()[0], StringComparer.Ordinal);
        strict = new JsonSerializerOptions(actorJson)
        {
            RespectNullableAnnotations = true,
            RespectRequiredConstructorParameters = true,
            TypeInfoResolver = (actorJson.TypeInfoResolver ?? new DefaultJsonTypeInfoResolver()).WithAddedModifier(RefuseNullElements),
        };
        strict.MakeReadOnly();
    }

    /// <summary>The method's parameter; null for a method without one, or not of the actor's interface.</summary>
    public ParameterInfo? ParameterOf(string method) => parameters.GetValueOrDefault(method);

    /// <param name="remoting">
    /// A proxy's call: the argument is the member named as the parameter of the body's <c>value</c>. Otherwise the body
    /// is the argument.
    /// </param>
    public bool IsArgument(ReadOnlyMemory<byte> body, ParameterInfo parameter, bool remoting)
    {
        try
        {
            if (!remoting)
            {
                return JsonSerializer.Deserialize(body.Span, parameter.ParameterType, strict) is not null;
            }

            using var document = JsonDocument.Parse(body);
            return document.RootElement is { ValueKind: JsonValueKind.Object } root
                && root.TryGetProperty("value", out var value) && value.ValueKind == JsonValueKind.Object
                && value.TryGetProperty(parameter.Name!, out var argument)
                && argument.Deserialize(parameter.ParameterType, strict) is not null;
        }
        catch (JsonException)
        {
            return false;
        }
    }

    /// <summary>
    /// Nullable annotations cover members, not a list's elements: a list declared of elements never null (a round's
    /// launches, a poll's agents) is checked once the object holding it is read.
    /// </summary>
    private static void RefuseNullElements(JsonTypeInfo type)
    {
        if (type.Kind != JsonTypeInfoKind.Object)
        {
            return;
        }

        var nullability = new NullabilityInfoContext();
        var lists = type.Properties
            .Where(property => property.Get is not null && property.AttributeProvider is PropertyInfo member
                && member.PropertyType.IsGenericType && typeof(IEnumerable).IsAssignableFrom(member.PropertyType)
                && nullability.Create(member).GenericTypeArguments is [{ Type.IsValueType: false, ReadState: NullabilityState.NotNull }])
            .Select(property => (property.Name, property.Get!))
            .ToList();
        if (lists.Count == 0)
        {
            return;
        }

        var read = type.OnDeserialized;
        type.OnDeserialized = value =>
        {
            foreach (var (name, get) in lists)
            {
                if (get(value) is IEnumerable elements && elements.Cast<object?>().Any(element => element is null))
                {
                    throw new JsonException($"'{name}' holds a null element.");
                }
            }

            read?.Invoke(value);
        };
    }
}
