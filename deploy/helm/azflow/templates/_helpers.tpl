{{/* Labels of every object. */}}
{{- define "azflow.labels" -}}
app.kubernetes.io/name: azflow
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
app.kubernetes.io/part-of: azflow
{{- end }}

{{/* The DaemonSet's selector. */}}
{{- define "azflow.selectorLabels" -}}
app.kubernetes.io/name: azflow
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
