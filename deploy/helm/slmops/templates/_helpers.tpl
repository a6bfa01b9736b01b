{{/* The release's resource name for a component: <release>-<component>. */}}
{{- define "slmops.name" -}}
{{- printf "%s-%s" .root.Release.Name .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "slmops.labels" -}}
app.kubernetes.io/name: {{ include "slmops.name" . }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/part-of: slmops
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "slmops.selector" -}}
app.kubernetes.io/name: {{ include "slmops.name" . }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "slmops.image" -}}
{{- $registry := .root.Values.image.registry -}}
{{- if $registry -}}
{{ printf "%s/%s:%s" (trimSuffix "/" $registry) .image .root.Values.image.tag }}
{{- else -}}
{{ printf "%s:%s" .image .root.Values.image.tag }}
{{- end -}}
{{- end -}}

{{- define "slmops.tls" -}}
{{- has .Values.kafka.securityProtocol (list "SSL" "SASL_SSL") -}}
{{- end -}}

{{- define "slmops.sasl" -}}
{{- has .Values.kafka.securityProtocol (list "SASL_PLAINTEXT" "SASL_SSL") -}}
{{- end -}}

{{/* The Kafka settings every worker reads, and the SASL credentials from their Secret. */}}
{{- define "slmops.kafkaEnv" -}}
- name: SLMOPS_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.credentialsSecret }}
      key: username
- name: SLMOPS_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.credentialsSecret }}
      key: password
{{- end -}}

{{- define "slmops.tokenEnv" -}}
{{- if .Values.httpTokenSecret }}
- name: SLMOPS_HTTP_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.httpTokenSecret }}
      key: token
{{- end }}
{{- end -}}

{{- define "slmops.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "slmops.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}
